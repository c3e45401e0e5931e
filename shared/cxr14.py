"""NIH ChestX-ray14 data: label CSVs, image discovery, patient-level splits, the Dataset, the assembled splits.

Used by ``convnext_cxr`` and ``hybridmednet`` (the synthetic demo set is in :mod:`shared.cxr14_demo`): both
find their data with :func:`locate_data`, split it with :func:`split_dataset` and get a :class:`CXRSplits`
from :meth:`CXRSplits.from_records`; their exports describe inputs with :func:`cxr_preprocessing`.
Two CSV layouts are accepted:

* NIH's own ``Data_Entry_2017.csv``: ``Image Index``, pipe-separated ``Finding Labels``
  (``No Finding`` = all zeros) and ``Patient ID``;
* one column per finding (0/1) next to an image column (``Image Index``, ``image`` or ``filename``)
  and optionally a patient column; without one, the patient is read from NIH's file name
  ``<patient>_<follow-up>.png``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from .cache import ImageCache
from .data import DataError, IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, describe_bad_images, group_split, load_image
from .export import Preprocessing
from .preflight import find_bad_files

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
    "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
)
IMAGE_COLUMNS = ("Image Index", "image", "filename", "Image", "image_id")
PATIENT_COLUMNS = ("Patient ID", "patient_id", "patient", "PatientID")
NO_FINDING = "No Finding"


@dataclass
class CXRRecords:
    """Parallel arrays describing a set of labelled chest X-rays."""
    images: list[str]  # file names as in the CSV
    paths: list[Path]
    labels: np.ndarray  # [N, num_findings] float32 0/1
    patients: np.ndarray  # [N] patient ids (str)
    findings: tuple[str, ...] = FINDINGS
    verified: bool = False  # every image was decoded once already (on_bad_image: skip); preflight skips them

    def subset(self, index: Sequence[int]) -> "CXRRecords":
        index = np.asarray(index, dtype=np.int64)
        return CXRRecords([self.images[i] for i in index], [self.paths[i] for i in index],
                          self.labels[index], self.patients[index], self.findings, self.verified)

    def __len__(self) -> int:
        return len(self.images)


def _pick_column(df: pd.DataFrame, candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in df.columns), None)


def read_label_csv(csv_path: str | Path, findings: Sequence[str] = FINDINGS) -> pd.DataFrame:
    """Return a frame with ``image``, ``patient`` and one 0/1 column per finding, in ``findings`` order."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"label file not found: {csv_path}")
    df = pd.read_csv(csv_path, index_col=False)
    image_col = _pick_column(df, IMAGE_COLUMNS)
    if image_col is None:
        raise DataError(f"{csv_path}: no image column; expected one of {list(IMAGE_COLUMNS)}, "
                        f"found columns {list(df.columns)}")
    out = pd.DataFrame({"image": df[image_col].astype(str)})
    if "Finding Labels" in df.columns:
        known = set(findings)
        matrix = np.zeros((len(df), len(findings)), dtype=np.float32)
        position = {name: i for i, name in enumerate(findings)}
        for row, text in enumerate(df["Finding Labels"].fillna(NO_FINDING).astype(str)):
            for label in (t.strip() for t in text.split("|")):
                if label == NO_FINDING or not label:
                    continue
                if label not in known:
                    raise DataError(f"{csv_path}: row {row + 2} ({out['image'][row]}) has unknown finding "
                                    f"{label!r}; known findings: {list(findings)}")
                matrix[row, position[label]] = 1.0
        for i, name in enumerate(findings):
            out[name] = matrix[:, i]
    else:
        missing = [f for f in findings if f not in df.columns]
        if missing:
            raise DataError(f"{csv_path}: label columns {missing} are missing; expected NIH's 'Finding Labels' "
                            f"column or one 0/1 column per finding. Found columns {list(df.columns)}")
        values = df[list(findings)]
        bad = ~values.isin([0, 1]).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{csv_path}: row {row + 2} ({out['image'][row]}) has label values other than 0/1: "
                            f"{values.iloc[row].to_dict()}")
        for name in findings:
            out[name] = values[name].astype(np.float32).to_numpy()
    patient_col = _pick_column(df, PATIENT_COLUMNS)
    out["patient"] = (df[patient_col].astype(str) if patient_col
                      else out["image"].map(lambda name: Path(name).stem.split("_")[0]))
    return out


def index_images(image_dir: str | Path) -> dict[str, Path]:
    """File name -> path for every image below ``image_dir`` (NIH ships ``images_001/images/...``)."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DataError(f"image directory not found: {image_dir}")
    return {p.name: p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS}


def table_records(csv_path: str | Path, image_dir: str | Path, findings: Sequence[str] = FINDINGS) -> CXRRecords:
    """Every row of the label CSV, with its image's path below ``image_dir`` (or where it would be)."""
    table = read_label_csv(csv_path, findings)
    on_disk = index_images(image_dir)
    paths = [on_disk.get(name, Path(image_dir) / name) for name in table["image"]]
    return CXRRecords(list(table["image"]), paths, table[list(findings)].to_numpy(np.float32),
                      table["patient"].to_numpy(str), tuple(findings))


def drop_bad_images(records: CXRRecords, on_bad_image: str = "error", on_bad_image_key: str = "data.on_bad_image",
                    source: str | Path = "the label CSV") -> CXRRecords:
    """``"error"``: stop when an image listed in ``source`` is missing (decoding is left to the engine's
    preflight); ``"skip"``: decode every image once (in parallel), drop the missing or unreadable ones and say
    which. ``on_bad_image_key`` is the setting's name in the calling project's config, for the messages."""
    if on_bad_image not in ("error", "skip"):
        raise DataError(f"{on_bad_image_key} must be 'error' or 'skip', got {on_bad_image!r}")
    present = [p.is_file() for p in records.paths]  # one stat per image (ChestX-ray14 has 112,120)
    bad = [(p, f"image not found: {p} (listed in {source})") for p, ok in zip(records.paths, present) if not ok]
    if bad and on_bad_image == "error":
        raise DataError(f"{len(bad)} of {len(records)} images are missing, e.g. {bad[0][1]}; set "
                        f"{on_bad_image_key}: skip to train without them\n" + describe_bad_images(bad))
    if on_bad_image == "error":
        return records
    bad += find_bad_files([p for p, ok in zip(records.paths, present) if ok], description="decoding every image")
    bad_paths = {p for p, _ in bad}
    if bad:
        print(f"skipping {len(bad)} of {len(records)} images: " + describe_bad_images(bad))
    kept = records.subset([i for i, p in enumerate(records.paths) if p not in bad_paths])
    kept.verified = True
    return kept


def load_records(csv_path: str | Path, image_dir: str | Path, findings: Sequence[str] = FINDINGS,
                 on_bad_image: str = "error", on_bad_image_key: str = "data.on_bad_image") -> CXRRecords:
    """The CSV joined with the images on disk, bad images handled by :func:`drop_bad_images`."""
    return drop_bad_images(table_records(csv_path, image_dir, findings), on_bad_image, on_bad_image_key, csv_path)


def split_records(records: CXRRecords, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 42,
                  train_val_list: str | Path | None = None, test_list: str | Path | None = None
                  ) -> tuple[CXRRecords, CXRRecords, CXRRecords]:
    """Train/val/test by patient (no patient in two parts). With NIH's official lists, the test part is
    ``test_list`` and train/val are split by patient inside ``train_val_list``."""
    if (train_val_list is None) != (test_list is None):
        raise ValueError("give both train_val_list and test_list, or neither")
    if test_list is not None:
        names = {n: i for i, n in enumerate(records.images)}
        test_names = Path(test_list).read_text().split()
        train_val_names = Path(train_val_list).read_text().split()
        test_idx = np.array([names[n] for n in test_names if n in names], dtype=np.int64)
        pool = np.array([names[n] for n in train_val_names if n in names], dtype=np.int64)
        val_share = fractions[1] / (fractions[0] + fractions[1])
        train_part, val_part = group_split(records.patients[pool], (1 - val_share, val_share), seed)
        return records.subset(pool[train_part]), records.subset(pool[val_part]), records.subset(test_idx)
    train_idx, val_idx, test_idx = group_split(records.patients, fractions, seed)
    return records.subset(train_idx), records.subset(val_idx), records.subset(test_idx)


class ChestXray14Dataset(Dataset):
    """(image tensor, 0/1 label vector). Grayscale X-rays become 3-channel tensors (for ImageNet backbones)
    in the transform.

    With a built :class:`~shared.cache.ImageCache` of the same records, images come from the cache
    (already decoded and resized) instead of the original files.
    """

    def __init__(self, records: CXRRecords, transform=None, cache: ImageCache | None = None):
        if cache is not None and cache.paths != [str(p) for p in records.paths]:
            raise ValueError("the image cache was built for a different list of images")
        self.records, self.transform, self.cache = records, transform, cache

    def __len__(self) -> int:
        return len(self.records)

    @property
    def sample_ids(self) -> list[str]:
        """The image files in index order: the sample column of ``results/<split>_predictions.csv``."""
        return [str(path) for path in self.records.paths]

    @property
    def labels(self) -> np.ndarray:
        """The 0/1 finding matrix [N, num_findings] (the preflight's class counts)."""
        return self.records.labels

    @property
    def groups(self) -> list[str]:
        """The patient of each image (the preflight warns about a patient in two splits)."""
        return list(self.records.patients)

    @property
    def files_verified(self) -> bool:
        return self.records.verified

    def load(self, index: int) -> Image.Image:
        """The grayscale image; the transform replicates it to 3 channels after augmenting one."""
        return self.cache[index] if self.cache is not None else load_image(self.records.paths[index], mode="L")

    def __getitem__(self, index: int):
        image = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.from_numpy(self.records.labels[index])


# ------------------------------------------------------------------------------------- assembled splits
def locate_data(image_dir: str | Path, labels_csv: str | Path, *, demo_dir: str | Path | None = None,
                demo_num_images: int = 600, image_size: int = 64, seed: int = 0,
                findings: Sequence[str] = FINDINGS,
                keys: tuple[str, str, str] = ("data.image_dir", "data.labels_csv", "data.demo")) -> tuple[Path, Path]:
    """(image folder, label CSV). With ``demo_dir``, the synthetic demo set there (written on first use);
    else the given paths, checked, with an error naming the project's config ``keys`` (folder, CSV, demo)."""
    if demo_dir is not None:
        from .cxr14_demo import demo_cxr_paths  # the demo module builds on this one
        return demo_cxr_paths(demo_dir, demo_num_images, image_size, seed, findings)
    image_dir, csv_path = Path(image_dir), Path(labels_csv)
    if not image_dir.is_dir() or not csv_path.is_file():
        dir_key, csv_key, demo_key = keys
        raise DataError(f"ChestX-ray14 data not found: {dir_key}={image_dir} (folder), {csv_key}={csv_path} (CSV). "
                        f"Point them at your copy (--set {dir_key}=... --set {csv_key}=...), or train on the "
                        f"synthetic demo set with --set {demo_key}=true")
    return image_dir, csv_path


def split_dataset(image_dir: str | Path, csv_path: str | Path, *, findings: Sequence[str] = FINDINGS,
                  fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 42, train_val_list: str = "",
                  test_list: str = "", on_bad_image: str = "error", on_bad_image_key: str = "data.on_bad_image"
                  ) -> tuple[CXRRecords, CXRRecords, CXRRecords]:
    """The labelled images on disk, split by patient (NIH's official lists when both are given); the split is
    made over every row of the CSV, so skipping bad images (``on_bad_image: skip``) moves no other image."""
    records = table_records(csv_path, image_dir, findings)
    parts = split_records(records, fractions, seed, train_val_list or None, test_list or None)
    checked = drop_bad_images(records, on_bad_image, on_bad_image_key, csv_path)
    kept = set(checked.images)  # split first, then drop: a skipped image never moves another between splits
    parts = tuple(part.subset([i for i, name in enumerate(part.images) if name in kept]) for part in parts)
    for part in parts:
        part.verified = checked.verified
    return parts


class CXRSplits(NamedTuple):
    """Patient-disjoint train/val/test datasets; iterates as the three datasets."""
    train: ChestXray14Dataset
    val: ChestXray14Dataset
    test: ChestXray14Dataset

    @classmethod
    def from_records(cls, records: Sequence[CXRRecords], train_transform, eval_transform,
                     caches: Sequence[ImageCache | None] = (None, None, None)) -> "CXRSplits":
        """Datasets of (train, val, test) records: the training split augments, the others only resize."""
        transforms = (train_transform, eval_transform, eval_transform)
        return cls(*(ChestXray14Dataset(r, tf, c) for r, tf, c in zip(records, transforms, caches)))

    @property
    def findings(self) -> list[str]:
        return list(self.train.records.findings)

    def held_out(self) -> dict[str, ChestXray14Dataset]:
        """``{"test": ...}`` for the engine's preflight (left out when empty, as in :meth:`evaluation_sets`)."""
        return {"test": self.test} if len(self.test) else {}

    def evaluation_sets(self) -> dict[str, ChestXray14Dataset]:
        """``{"val": ..., "test": ...}`` for :func:`shared.evaluate_best`; an empty split is left out."""
        return {name: dataset for name, dataset in (("val", self.val), ("test", self.test)) if len(dataset)}


def cxr_preprocessing(image_size: int) -> Preprocessing:
    """What an exported chest X-ray model takes: the grayscale image resized to ``image_size`` squared,
    copied to 3 channels, normalised with ImageNet statistics (``build_image_transform(size, train=False)``)."""
    return Preprocessing(size=(image_size, image_size), channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         spatial_dims=2, extra={"grayscale": "replicated to 3 channels"})


def format_finding_table(metrics: Mapping[str, float], findings: Sequence[str]) -> str:
    """Per-finding AUROC, AP, sensitivity and specificity (at the thresholds used) and the macro means."""
    columns = ("auroc", "ap", "sensitivity", "specificity")
    lines = [f"{'finding':<20}" + "".join(f"{name:>13}" for name in columns)]
    lines += [f"{name:<20}" + "".join(f"{metrics[f'{c}/{name}']:13.4f}" for c in columns) for name in findings]
    lines.append(f"{'macro':<20}" + "".join(f"{metrics[f'macro_{c}']:13.4f}" for c in columns))
    return "\n".join(lines)
