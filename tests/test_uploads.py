"""shared.uploads: an upload's kind comes from its bytes, and a DICOM's own display transforms are applied."""
import gzip
import io

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from shared.testing import write_dicom
from shared.uploads import UploadError, dicom_image, save_upload, sniff


def png_bytes(mode="L", fmt="PNG"):
    buffer = io.BytesIO()
    Image.new(mode, (8, 8)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_the_kind_is_judged_by_the_bytes_not_the_name(tmp_path):
    volume = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    volume.to_filename(tmp_path / "v.nii")
    raw = (tmp_path / "v.nii").read_bytes()
    dicom = write_dicom(tmp_path / "x.bin", np.zeros((4, 4))).read_bytes()  # a DICOM without its suffix
    assert [sniff(b) for b in (png_bytes(), png_bytes("RGB", "JPEG"), png_bytes("I;16", "TIFF"), dicom, raw,
                               gzip.compress(raw))] == ["image", "image", "image", "dicom", "nifti", "nifti-gz"]
    assert [sniff(b) for b in (b"", b"plain text", gzip.compress(b"plain text"), png_bytes()[:20])] == [None] * 4
    path, kind = save_upload(dicom, "../../etc/passwd", tmp_path, 3)
    assert (path, kind) == (tmp_path / "upload3.dcm", "dicom")  # the sender's name never becomes a path
    with pytest.raises(UploadError, match=r"^notes: not a file this page can read; send a PNG, JPEG, TIFF"):
        save_upload(b"plain text", "notes", tmp_path, 0)


def test_a_dicom_window_and_monochrome1_are_applied(tmp_path):
    ramp = np.tile(np.linspace(0, 2000, 21), (4, 1))  # 0, 100, ..., 2000
    windowed = np.asarray(dicom_image(write_dicom(tmp_path / "w.dcm", ramp, window=(1000, 200)), "w.dcm"))
    assert windowed.dtype == np.uint8 and set(windowed[0, :9]) == {0} and set(windowed[0, 12:]) == {255}
    assert 0 < windowed[0, 10] < 255  # only the window's inside keeps its grey levels
    plain = np.asarray(dicom_image(write_dicom(tmp_path / "p.dcm", ramp), "p.dcm"))
    inverted = np.asarray(dicom_image(write_dicom(tmp_path / "i.dcm", 2000 - ramp, "MONOCHROME1"), "i.dcm"))
    assert plain[0].tolist() == np.round(np.linspace(0, 255, 21)).tolist() and np.array_equal(inverted, plain)
