"""Data helpers shared by the 2D projects: safe image reading, class folders, seeded splits (by image or by
patient), transforms, and the image-size check against a network's total stride."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, StratifiedKFold, train_test_split
from torchvision.transforms import v2

from .config import ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VOLUME_SUFFIXES = (".nii", ".nii.gz")  # NIfTI volumes (alzheimer_mosa)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_GROUP_FOLDS = 20  # stratified_group_split: finer folds would hold too few patients to stratify


class DataError(ValueError):
    """The data on disk does not match what the config promises."""


def is_volume(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI volume (``.nii``/``.nii.gz``, any case) rather than a 2D image."""
    return str(path).lower().endswith(VOLUME_SUFFIXES)


#: PIL modes with more than 8 bits per pixel (16-bit PNG/TIFF, 32-bit integer or float images).
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_8bit(image: Image.Image) -> Image.Image:
    """Any PIL image -> an 8-bit ``L`` or ``RGB``/``RGBA``-free image that keeps its contrast.

    PIL's own ``convert`` clips 16-bit values at 255, so a 16-bit X-ray would turn white. Instead a
    high-depth image is scaled linearly from its own minimum..maximum to 0..255 (the real range, never
    clipped; a constant image becomes black). A palette image goes through its palette; transparency is
    composited onto black, the background of medical images.
    """
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        opaque = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(opaque, image.convert("RGBA")).convert("RGB")
    return image


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Open an image fully (so truncation shows up here), brought to 8 bits without losing contrast
    (:func:`to_8bit`: 16-bit images are scaled, not clipped) and converted to ``mode``; clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return to_8bit(image).convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def describe_bad_images(bad: list[tuple[Path, str]], limit: int = 5) -> str:
    listed = "\n  ".join(reason for _, reason in bad[:limit])
    more = f"\n  ... and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"{len(bad)} unreadable or missing image(s):\n  {listed}{more}"


def scan_class_folders(root: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS
                       ) -> tuple[list[tuple[Path, int]], list[str]]:
    """``root/<class>/<file>`` -> ([(path, class_index)], sorted class names).

    An absent root, a root without class folders, or an empty class folder is an error, because
    each silently shifts the label indices; so is a single class folder (a "classifier" of one class
    reaches accuracy 1.0 and means nothing).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory not found: {root}")
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        raise DataError(f"no class folders in {root}; expected {root}/<class_name>/<image files>")
    if len(class_names) == 1:
        raise DataError(f"{root} holds one class folder ({class_names[0]!r}); a classifier needs at least two: "
                        f"put each class's images in its own folder under {root}")
    samples = []
    for index, name in enumerate(class_names):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in extensions and p.is_file())
        if not files:
            raise DataError(f"class folder {root / name} has no files with extensions {list(extensions)}")
        samples.extend((path, index) for path in files)
    return samples, class_names


@dataclass
class SplitConfig:
    """How class-folder images are split: by image, or by a group id (the patient) read from the file name, so
    that no patient has images on both sides of a split (one patient's images look alike: a by-image split
    validates on near-copies of training images and overstates how well the model generalises)."""

    group_pattern: str = ""  # regex searched in each file name; its first group (or the match) is the patient id, e.g. person(\d+) for Kermany's person123_bacteria_456.jpeg; "" = split by image

    def __post_init__(self) -> None:
        try:
            re.compile(self.group_pattern)
        except re.error as err:
            raise ConfigError(f"split.group_pattern: '{self.group_pattern}' is not a valid regular expression "
                              f"({err}); write one whose first group is the patient id, e.g. person(\\d+)") from None


def group_ids(paths: Sequence[str | Path], pattern: str) -> list[str]:
    """One group id per file: the first capture group of ``pattern`` (or its whole match) searched in the file
    name; without a pattern the path itself, so every image is its own group."""
    if not pattern:
        return [str(path) for path in paths]
    regex = re.compile(pattern)
    ids = []
    for path in paths:
        match = regex.search(Path(path).name)
        group = match and (match.group(1) if regex.groups else match.group(0))
        if not group:
            raise DataError(f"{path}: the file name does not match split.group_pattern '{pattern}', so its patient "
                            "is unknown; widen the pattern to cover every file name (or rename the file)")
        ids.append(group)
    return ids


def _shares_groups(groups: Sequence | None) -> bool:
    """True when some group holds several images; groups of one image each split exactly like images."""
    return groups is not None and len(set(groups)) < len(groups)


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int,
                     groups: Sequence | None = None) -> list[np.ndarray]:
    """Index arrays for consecutive parts (e.g. 0.7/0.15/0.15) with class proportions kept; with ``groups``
    (patient ids) holding several images, every group lands in one part (:func:`stratified_group_split`)."""
    labels = np.asarray(labels)
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    if _shares_groups(groups):
        return stratified_group_split(labels, groups, fractions, seed)
    remaining = np.arange(len(labels))
    parts = []
    for fraction in fractions[:-1]:
        take_count = int(round(fraction * len(labels)))  # whole counts: 0.15 / 0.3 is 0.4999... in floats
        counts = np.bincount(labels[remaining])
        stratify = labels[remaining] if counts[counts > 0].min() >= 2 else None
        take, remaining = train_test_split(remaining, train_size=take_count, random_state=seed, stratify=stratify)
        parts.append(np.sort(take))
    parts.append(np.sort(remaining))
    return parts


def stratified_group_split(labels: Sequence[int], groups: Sequence, fractions: Sequence[float],
                           seed: int) -> list[np.ndarray]:
    """Parts with every group in one part and class proportions kept as far as whole groups allow.

    sklearn's StratifiedGroupKFold cuts the data into k folds of whole groups with similar class mixes; the
    parts take consecutive folds by their fractions. k is the fewest folds that come closest to the fractions
    (5 for 0.8/0.2, 20 for 0.7/0.15/0.15), at most 20 and at most the groups of the smallest class, so that
    every fold can hold every class.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    bounds = np.cumsum([0.0, *fractions])
    smallest = min(len(set(groups[labels == label])) for label in np.unique(labels))
    most = min(MAX_GROUP_FOLDS, len(set(groups)), max(smallest, len(fractions)))
    edges = {k: np.floor(bounds * k + 0.5).astype(int) for k in range(2, most + 1)}
    edges = {k: e for k, e in edges.items() if np.all(np.diff(e) >= 1)}  # every part gets a fold
    if not edges:
        raise DataError(f"{len(set(groups))} groups (split.group_pattern) cannot fill the {len(fractions)} parts "
                        f"{list(fractions)}: every part needs whole groups; use fewer parts or more patients")
    folds = min(edges, key=lambda k: (round(float(np.abs(edges[k] / k - bounds).max()), 3), k))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_parts = [val for _, val in splitter.split(np.zeros(len(labels)), labels, groups)]
    return [np.sort(np.concatenate(fold_parts[a:b])) for a, b in zip(edges[folds][:-1], edges[folds][1:])]


def stratified_folds(labels: Sequence[int], n_splits: int, seed: int,
                     groups: Sequence | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) index pairs of a shuffled, seeded stratified k-fold: StratifiedKFold by image, or
    StratifiedGroupKFold when ``groups`` (patient ids) hold several images, so no patient is on both sides."""
    labels, grouped = np.asarray(labels), _shares_groups(groups)
    splitter = (StratifiedGroupKFold if grouped else StratifiedKFold)(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels, groups if grouped else None))


def group_split(groups: Sequence, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Like :func:`stratified_split` but every group (e.g. patient) lands in exactly one part."""
    groups = np.asarray(groups)
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    remaining = np.arange(len(groups))
    parts, left = [], 1.0
    for fraction in fractions[:-1]:
        splitter = GroupShuffleSplit(n_splits=1, train_size=fraction / left, random_state=seed)
        take, rest = next(splitter.split(remaining, groups=groups[remaining]))
        parts.append(np.sort(remaining[take]))
        remaining = remaining[rest]
        left -= fraction
    parts.append(np.sort(remaining))
    return parts


def single_threaded_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: SimpleITK gets one thread per worker, as torch already does by itself.
    torchio resamples volumes through SimpleITK, which otherwise starts a thread per core in every worker,
    so two workers on two cores ran no faster than one (measured in ``bench/data_pipeline.py``)."""
    sitk = sys.modules.get("SimpleITK")  # only if the parent process imported it (via torchio)
    if sitk is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def pre_crop_size(image_size: int, margin: float) -> int:
    """Side length an image is resized to before its random crop to ``image_size`` (e.g. 0.15 -> 15 % larger);
    the preprocessed cache stores images at this size."""
    return int(round(image_size * (1 + margin)))


def total_stride(model: nn.Module) -> int:
    """How many input pixels per side one cell of the network's last feature map covers, read from timm's
    ``feature_info`` (which every timm model and this repository's own backbones declare)."""
    return max(int(info["reduction"]) for info in model.feature_info)


def check_image_size(image_size: int, stride: int, key: str, network: str) -> None:
    """Refuse an image size below the network's total stride before training: there a strided convolution or
    pooling fails deep inside the first forward pass (ConvNeXt, Swin, Vision Mamba), or the last stage sees
    padding only (ResNet), neither of which says which setting to change."""
    if image_size < stride:
        raise ConfigError(f"{key}={image_size} is too small for {network}, which downsamples by {stride} (its last "
                          f"stage would get less than one pixel); set {key} to {stride} or more, best a multiple "
                          f"of {stride}")


def build_image_transform(size: int, train: bool, augmentation: str = "standard",
                          mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                          hflip: bool = True, crop_margin: float = 0.15, normalize: bool = True) -> v2.Compose:
    """torchvision v2 pipeline from a PIL image (grayscale or RGB) to a normalised float tensor [3, size, size],
    or with ``normalize=False`` to the uint8 tensor [C, size, size] (C = 1 for grayscale) that
    :class:`ImageNormalize` finishes on the device.

    ``augmentation`` (training only): ``none`` = resize; ``minimal`` = + horizontal flip;
    ``standard`` = resize to ``pre_crop_size(size, crop_margin)``, one random affine warp (+-10 degrees,
    scale 0.8-1, shift up to 5 %), centre crop to ``size``, flip, brightness/contrast;
    ``strong`` = standard + RandAugment + random erasing. Evaluation always resizes only.
    ``hflip=False`` drops the flip where left and right differ anatomically (chest X-rays).

    Why this shape, measured in ``bench/data_pipeline.py``: the first resize is exactly what the
    preprocessed cache stores (a no-op for a cached image, which already has that size), and rotation,
    scale and shift are a single bilinear resampling by Pillow on the small image, about half the time of
    a crop-resize followed by a rotation on tensors. Colour and normalisation run on tensors, and a
    grayscale image stays one channel until it is replicated to three at the very end.
    """
    to_tensor = [v2.ToImage()]  # PIL -> uint8 tensor (C, H, W), C = 1 for grayscale
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.RGB(), v2.Normalize(mean, std)] if normalize else []
    resize = [v2.Resize((size, size), antialias=True)]
    if not train or augmentation == "none":
        return v2.Compose(resize + to_tensor + to_float)
    flip = [v2.RandomHorizontalFlip()] if hflip else []
    if augmentation == "minimal":
        return v2.Compose(resize + flip + to_tensor + to_float)
    margin_size = pre_crop_size(size, crop_margin)
    standard = [v2.Resize((margin_size, margin_size), interpolation=v2.InterpolationMode.BICUBIC),
                v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.8, 1.0),
                                interpolation=v2.InterpolationMode.BILINEAR),
                v2.CenterCrop(size), *flip, *to_tensor, v2.ColorJitter(brightness=0.2, contrast=0.2)]
    if augmentation == "standard":
        return v2.Compose(standard + to_float)
    if augmentation == "strong":
        return v2.Compose(standard + [v2.RandAugment(num_ops=2, magnitude=9)] + to_float
                          + [v2.RandomErasing(p=0.25)])
    raise ValueError(f"augmentation must be none, minimal, standard or strong, got {augmentation!r}")


class ImageNormalize(nn.Module):
    """uint8 images [B, C, H, W] (C = 1 or 3) -> normalised float32 [B, 3, H, W], on whatever device they are.

    The other half of ``build_image_transform(..., normalize=False)``, as timm's prefetching loader does it:
    loader workers then hand over one uint8 byte per grayscale pixel instead of three float32 values (12x
    fewer bytes through worker shared memory, pinning and the host-to-device copy), and the conversion is
    one batched operation on the GPU.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        mean = torch.tensor(mean).view(1, -1, 1, 1)
        std = torch.tensor(std).view(1, -1, 1, 1)
        # (x / 255 - mean) / std = shift + x * scale
        self.register_buffer("shift", -mean / std, persistent=False)
        self.register_buffer("scale", 1 / (255 * std), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"ImageNormalize expects uint8 images (build_image_transform(normalize=False)), "
                            f"got {images.dtype}")
        if self.scale.device != images.device:  # once: the task, not the model, holds this module
            self.to(images.device)
        # one fused op; a grayscale (B, 1, H, W) broadcasts to (B, 3, H, W)
        return torch.addcmul(self.shift, images.float(), self.scale)
