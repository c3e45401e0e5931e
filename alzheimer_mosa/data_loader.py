"""Volumes on disk -> labelled records -> torchio-preprocessed datasets.

Two layouts:

* class folders ``data_root/{train,val[,test]}/<class>/*.nii[.gz]`` whose names are ``class_names``;
* a CSV manifest ``path,label[,subject,split]`` (``data_root`` is the .csv file; relative paths are
  relative to it). Without a ``split`` column the subjects are split into train/val/test with
  ``val_fraction``/``test_fraction``, every subject (or every file, without a ``subject`` column)
  in exactly one part.

Labels are indices into ``class_names`` everywhere, so the order in the config is the order of the
logits, the confusion matrix and every report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torchio as tio
from torch.utils.data import Dataset

from shared import DataError, group_split
from shared.data import is_volume
from shared.cache import ArrayCache
from alzheimer_mosa.augment import IMAGE_KEY, build_preprocessing, build_transform
from alzheimer_mosa.config import Config, DataConfig
from alzheimer_mosa.demo_data import ensure_demo_dataset

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")
MANIFEST_COLUMNS = ("path", "label")


@dataclass(frozen=True)
class VolumeRecord:
    path: Path
    label: int
    subject: str


def read_nifti(path: str | Path) -> tuple[torch.Tensor, np.ndarray]:
    """torchio reader: ``(1, X, Y, Z)`` float32 tensor and affine; a 4D series keeps its first frame."""
    try:
        image = nib.load(str(path))
        # (X, Y, Z, T[, ...]): read only the first frame of every extra axis.
        first_frame = (slice(None),) * 3 + (0,) * max(len(image.shape) - 3, 0)
        volume = np.array(image.dataobj[first_frame], dtype=np.float32)  # a writable copy
    except Exception as err:  # nibabel raises many types for truncated or foreign files
        raise DataError(f"cannot read NIfTI volume {path}: {err}") from err
    if volume.ndim != 3:
        raise DataError(f"{path}: expected a 3D or 4D volume, got shape {volume.shape}")
    if not np.isfinite(volume).all():
        raise DataError(f"{path}: volume contains NaN or infinite values")
    return torch.from_numpy(volume[None]), image.affine


def folder_records(split_dir: Path, class_names: list[str]) -> list[VolumeRecord]:
    """Records of ``split_dir/<class>/*.nii[.gz]``; unknown or empty class folders are errors."""
    if not split_dir.is_dir():
        raise DataError(f"split folder not found: {split_dir}")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise DataError(f"{split_dir}: class folder(s) {unknown} are not in data.class_names {class_names}")
    records = []
    for label, name in enumerate(class_names):
        class_dir = split_dir / name
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and is_volume(p)) if class_dir.is_dir() else []
        if not files:
            raise DataError(f"class folder {class_dir} has no .nii/.nii.gz volumes")
        records += [VolumeRecord(path, label, path.name.split(".")[0]) for path in files]
    return records


def _manifest_label(value, class_names: list[str], csv_path: Path, row: int) -> int:
    text = str(value).strip()
    if text in class_names:
        return class_names.index(text)
    raise DataError(f"{csv_path} row {row + 2}: label {text!r} is not in data.class_names {class_names}")


def manifest_records(csv_path: Path, data: DataConfig, seed: int) -> dict[str, list[VolumeRecord]]:
    """Split -> records from a ``path,label[,subject,split]`` CSV."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {missing}; found {list(table.columns)}, "
                        f"expected path,label[,subject,split]")
    records = []
    for row, entry in enumerate(table.itertuples(index=False)):
        path = Path(entry.path)
        path = path if path.is_absolute() else csv_path.parent / path
        if not path.is_file():
            raise DataError(f"{csv_path} row {row + 2}: file not found: {path}")
        subject = getattr(entry, "subject", "") or path.name.split(".")[0]
        records.append(VolumeRecord(path, _manifest_label(entry.label, data.class_names, csv_path, row), subject))
    if "split" in table.columns:
        bad = sorted(set(table["split"]) - set(SPLITS))
        if bad:
            raise DataError(f"{csv_path}: split value(s) {bad} are not among {list(SPLITS)}")
        return {s: [r for r, split in zip(records, table["split"]) if split == s] for s in SPLITS}
    fractions = [1.0 - data.val_fraction - data.test_fraction, data.val_fraction, data.test_fraction]
    parts = group_split([r.subject for r in records], fractions, seed)
    return {split: [records[i] for i in indices] for split, indices in zip(SPLITS, parts)}


def load_split_records(data: DataConfig, seed: int) -> dict[str, list[VolumeRecord]]:
    """Split name -> records for train, val and (when present) test."""
    if data.data_root:
        root = Path(data.data_root)
    else:
        root = ensure_demo_dataset(Path(data.demo_dir), data.class_names, seed=seed)
        logger.info("no data.data_root configured: using the synthetic demo set in %s", root)
    if root.suffix.lower() == ".csv":
        if not root.is_file():
            raise DataError(f"manifest not found: {root}")
        splits = manifest_records(root, data, seed)
    else:
        if not root.is_dir():
            raise DataError(f"data_root not found: {root}")
        splits = {s: folder_records(root / s, data.class_names)
                  for s in SPLITS if s in REQUIRED_SPLITS or (root / s).is_dir()}
    for split in REQUIRED_SPLITS:
        if not splits.get(split):
            raise DataError(f"{root}: the {split} split holds no volumes")
    return {s: r for s, r in splits.items() if r}


class VolumeCache(ArrayCache):
    """Volumes after :func:`build_preprocessing` (float32 ``(1, *target_size)``) and their affines, so an
    epoch only runs the augmentation and the intensity normalisation."""

    def __init__(self, root: str | Path, records: list[VolumeRecord], data: DataConfig):
        self.preprocess = build_preprocessing(data)
        self.fields = {"volumes": ((1, *data.target_size), np.float32), "affines": ((4, 4), np.float64)}
        key = {"target_size": list(data.target_size), "size_mode": data.size_mode,
               "foreground_crop": data.foreground_crop, "foreground_margin": data.foreground_margin}
        super().__init__(root, [r.path for r in records], key, label="x".join(map(str, data.target_size)))

    def compute_row(self, index: int) -> dict[str, np.ndarray]:
        image = self.preprocess(tio.Subject({IMAGE_KEY: tio.ScalarImage(self.paths[index], reader=read_nifti)}))
        return {"volumes": image[IMAGE_KEY].data.numpy(), "affines": image[IMAGE_KEY].affine}

    def subject(self, index: int) -> tio.Subject:
        arrays = self.arrays()
        volume = torch.from_numpy(np.array(arrays["volumes"][index]))  # a writable copy of the memmap row
        return tio.Subject({IMAGE_KEY: tio.ScalarImage(tensor=volume, affine=np.array(arrays["affines"][index]))})


class VolumeDataset(Dataset):
    """Records -> ``(image (C, X, Y, Z) float32, label)`` through a torchio transform, reading the
    NIfTI file or, when given, the preprocessed cache (then ``transform`` omits the preprocessing)."""

    def __init__(self, records: list[VolumeRecord], transform: tio.Transform, cache: VolumeCache | None = None):
        self.records = records
        self.transform = transform
        self.cache = cache

    def __len__(self) -> int:
        return len(self.records)

    @property
    def sample_ids(self) -> list[str]:
        """The volume paths in index order (the ``sample`` column of ``results/<split>_predictions.csv``)."""
        return [str(record.path) for record in self.records]

    @property
    def labels(self) -> np.ndarray:
        """The class index of every volume, from the records (no volume is read): the preflight's class counts."""
        return np.array([record.label for record in self.records], dtype=np.int64)

    @property
    def groups(self) -> list[str]:
        """The subject of every volume (the manifest's ``subject``, else the file name): the preflight warns
        when one subject is in two splits."""
        return [record.subject for record in self.records]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        subject = (self.cache.subject(index) if self.cache is not None
                   else tio.Subject({IMAGE_KEY: tio.ScalarImage(record.path, reader=read_nifti)}))
        image = self.transform(subject)[IMAGE_KEY].data.float()
        return image, record.label


def volume_caches(cfg: Config, splits: dict[str, list[VolumeRecord]]) -> dict[str, VolumeCache]:
    """One cache per split (empty when ``data.cache_dir`` is not set)."""
    if not cfg.data.cache_dir:
        return {}
    return {split: VolumeCache(cfg.data.cache_dir, records, cfg.data) for split, records in splits.items()}


def build_datasets(cfg: Config) -> dict[str, VolumeDataset]:
    """Split name -> dataset; only ``train`` gets the random augmentation."""
    splits = load_split_records(cfg.data, cfg.train.seed)
    caches = volume_caches(cfg, splits)
    if caches and not all(cache.ready for cache in caches.values()):
        logger.warning("no finished volume cache in %s for these settings: reading the NIfTI files "
                       "(build it once with alzheimer_mosa/prepare_cache.py)", cfg.data.cache_dir)
        caches = {}
    return {split: VolumeDataset(records, build_transform(cfg.data, cfg.augment, train=split == "train",
                                                          preprocessed=bool(caches)), caches.get(split))
            for split, records in splits.items()}
