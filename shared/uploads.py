"""Files a person uploads to :mod:`shared.serve`: what kind they are, judged by their bytes and not their name,
and how each becomes a model input. Every refusal is a :class:`UploadError` whose text is shown on the page.

* PNG, JPEG and whatever else Pillow decodes: :func:`shared.data.load_image` (16-bit scaled, never clipped).
* DICOM (Part 10 files, ``DICM`` at byte 128) through ``pydicom``: the modality LUT (rescale slope and
  intercept), the VOI LUT or window the file names, MONOCHROME1 inverted so that bone is bright as in
  MONOCHROME2, then scaled from its own minimum..maximum to 8 bits like a 16-bit PNG.
* NIfTI-1/2 (``.nii`` or gzip-compressed ``.nii.gz``, recognised by the header size field), for 3D models.
"""
from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .data import DataError, to_8bit

KINDS = {"image": ".img", "dicom": ".dcm", "nifti": ".nii", "nifti-gz": ".nii.gz"}
READABLE = "PNG, JPEG, TIFF, DICOM or NIfTI"


class UploadError(DataError):
    """An uploaded file this model cannot take; the message names the file and says what to send instead."""


def _nifti_header(head: bytes) -> bool:
    """True for the first bytes of a NIfTI-1 (header size 348) or NIfTI-2 (540) file, either byte order."""
    return len(head) >= 4 and any(struct.unpack(order + "i", head[:4])[0] in (348, 540) for order in "<>")


def sniff(data: bytes) -> str | None:
    """The kind of file ``data`` is (a key of :data:`KINDS`), or None when it is none of them."""
    if data[128:132] == b"DICM":
        return "dicom"
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                return "nifti-gz" if _nifti_header(stream.read(4)) else None
        except (OSError, EOFError):
            return None
    if _nifti_header(data):
        return "nifti"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        return "image"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def save_upload(data: bytes, name: str, folder: Path, index: int) -> tuple[Path, str]:
    """Write an upload into ``folder`` under a name of our own (the sender's name never becomes a path);
    returns (path, kind). A file of no known kind is refused here."""
    kind = sniff(data)
    if kind is None:
        raise UploadError(f"{name}: not a file this page can read; send a {READABLE} file")
    path = folder / f"upload{index}{KINDS[kind]}"
    path.write_bytes(data)
    return path, kind


def dicom_image(path: Path, name: str) -> Image.Image:
    """One DICOM frame as an 8-bit ``L`` (or ``RGB``) image, with the file's own display transforms applied."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space

    # A damaged file is answered with one line; pydicom's warning per invalid tag would only flood the console.
    # (Process-wide, and not restored: requests run in threads, and this module only reads uploads.)
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as err:  # pydicom raises many types for damaged files and missing decoders
        raise UploadError(f"{name}: cannot read this DICOM file ({type(err).__name__}: {err})") from None
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UploadError(f"{name}: a DICOM series of {frames} frames; this model takes one 2D image per file")
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    if getattr(dataset, "SamplesPerPixel", 1) == 3:
        if photometric.startswith("YBR"):
            pixels = convert_color_space(pixels, photometric, "RGB")
        return Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="RGB")
    values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float32)
    if photometric == "MONOCHROME1":  # MONOCHROME1 shows low values bright
        values = values.max() - values
    return to_8bit(Image.fromarray(values, mode="F"))
