"""NIH ChestX-ray14 data: label CSVs, image discovery, patient-level splits, the Dataset, a demo generator.

Used by ``convnext_cxr`` and ``hybridmednet``. Two CSV layouts are accepted:

* NIH's own ``Data_Entry_2017.csv``: ``Image Index``, pipe-separated ``Finding Labels``
  (``No Finding`` = all zeros) and ``Patient ID``;
* one column per finding (0/1) next to an image column (``Image Index``, ``image`` or ``filename``)
  and optionally a patient column; without one, the patient is read from NIH's file name
  ``<patient>_<follow-up>.png``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from .cache import ImageCache
from .data import DataError, IMAGE_EXTENSIONS, describe_bad_images, find_unreadable_images, group_split, load_image

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

    def subset(self, index: Sequence[int]) -> "CXRRecords":
        index = np.asarray(index, dtype=np.int64)
        return CXRRecords([self.images[i] for i in index], [self.paths[i] for i in index],
                          self.labels[index], self.patients[index], self.findings)

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


def load_records(csv_path: str | Path, image_dir: str | Path, findings: Sequence[str] = FINDINGS,
                 on_bad_image: str = "error") -> CXRRecords:
    """Join the CSV with the images on disk.

    ``on_bad_image="error"`` stops with the first few missing files named; ``"skip"`` also decodes
    every image once, drops the missing or unreadable ones and prints how many.
    """
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    table = read_label_csv(csv_path, findings)
    on_disk = index_images(image_dir)
    paths = [on_disk.get(name, Path(image_dir) / name) for name in table["image"]]
    bad = [(p, f"image not found: {p} (listed in {csv_path})") for name, p in zip(table["image"], paths)
           if name not in on_disk]
    if on_bad_image == "skip":
        bad += find_unreadable_images([p for name, p in zip(table["image"], paths) if name in on_disk])
    if bad and on_bad_image == "error":
        raise DataError(describe_bad_images(bad) + "\nSet data.on_bad_image: skip to train without them.")
    keep = np.ones(len(table), dtype=bool)
    if bad:
        bad_paths = {p for p, _ in bad}
        keep = np.array([p not in bad_paths for p in paths])
        print(f"skipping {len(bad)} of {len(table)} images: " + describe_bad_images(bad))
    table = table[keep].reset_index(drop=True)
    return CXRRecords(list(table["image"]), [p for p, k in zip(paths, keep) if k],
                      table[list(findings)].to_numpy(np.float32), table["patient"].to_numpy(str), tuple(findings))


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

    def load(self, index: int) -> Image.Image:
        """The grayscale image; the transform replicates it to 3 channels after augmenting one."""
        return self.cache[index] if self.cache is not None else load_image(self.records.paths[index], mode="L")

    def __getitem__(self, index: int):
        image = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.from_numpy(self.records.labels[index])


# ----------------------------------------------------------------------------------------- demo data
def _finding_mask(finding: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A distinct shape for each finding inside its own cell of a 4x4 grid over the chest."""
    cell = size // 4
    row, col = divmod(finding + 1, 4)  # cells 1..14 (skip the top-left corner and the last cell)
    y0, x0 = row * cell, col * cell
    yy, xx = np.mgrid[0:cell, 0:cell] / cell - 0.5
    jitter = rng.uniform(-0.08, 0.08, size=2)
    yy, xx = yy - jitter[0], xx - jitter[1]
    shape = finding % 7
    if shape == 0:
        local = (yy ** 2 + xx ** 2) < 0.09  # disc
    elif shape == 1:
        local = (np.abs(yy) < 0.3) & (np.abs(xx) < 0.3) & ~((np.abs(yy) < 0.15) & (np.abs(xx) < 0.15))  # frame
    elif shape == 2:
        local = (np.abs(yy) < 0.08) | (np.abs(xx) < 0.08)  # cross
    elif shape == 3:
        local = (np.sin(yy * 30) > 0.3) & (np.abs(xx) < 0.35)  # stripes
    elif shape == 4:
        local = np.abs(yy - xx) < 0.08  # diagonal bar
    elif shape == 5:
        local = ((yy ** 2 + xx ** 2) < 0.12) & ((yy ** 2 + xx ** 2) > 0.05)  # ring
    else:
        local = (np.abs(yy) + np.abs(xx)) < 0.3  # diamond
    mask = np.zeros((size, size), dtype=np.float32)
    mask[y0:y0 + cell, x0:x0 + cell] = local
    # findings 7-13 reuse the seven shapes, dimmer, each still in its own cell
    return mask * (1.0 if finding < 7 else 0.7)


def make_synthetic_cxr(out_dir: str | Path, num_images: int = 600, size: int = 64, seed: int = 0,
                       images_per_patient: int = 3, positive_rate: float = 0.25,
                       findings: Sequence[str] = FINDINGS) -> tuple[Path, Path]:
    """Write a learnable chest-X-ray-like demo set: ``images/*.png`` + NIH-style ``Data_Entry_2017.csv``.

    Each image is a noisy thorax (two bright lung fields); each present finding adds its own shape in
    its own region, so a small model can learn all findings in a few CPU minutes.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    thorax = 0.25 + 0.25 * (((yy - 0.55) / 0.4) ** 2 + ((xx - 0.3) / 0.18) ** 2 < 1) \
        + 0.25 * (((yy - 0.55) / 0.4) ** 2 + ((xx - 0.7) / 0.18) ** 2 < 1)
    rows = []
    for i in range(num_images):
        patient, follow_up = divmod(i, images_per_patient)
        present = rng.random(len(findings)) < positive_rate
        image = thorax * rng.uniform(0.8, 1.2) + rng.normal(0, 0.12, (size, size))
        for f in np.flatnonzero(present):
            image = image + rng.uniform(0.15, 0.35) * _finding_mask(int(f), size, rng)
        name = f"{patient + 1:08d}_{follow_up:03d}.png"
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(image_dir / name)
        labels = "|".join(findings[f] for f in np.flatnonzero(present)) or NO_FINDING
        rows.append({"Image Index": name, "Finding Labels": labels, "Follow-up #": follow_up,
                     "Patient ID": patient + 1})
    csv_path = out_dir / "Data_Entry_2017.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return image_dir, csv_path


def demo_cxr_paths(out_dir: str | Path, num_images: int, image_size: int, seed: int,
                   findings: Sequence[str] = FINDINGS) -> tuple[Path, Path]:
    """(image folder, label CSV) of the synthetic demo set in ``out_dir``, written on first use with images
    of ``max(64, image_size)`` px. The CSV is written last, so its presence means a finished set."""
    out_dir = Path(out_dir)
    csv_path = out_dir / "Data_Entry_2017.csv"
    if csv_path.is_file():
        return out_dir / "images", csv_path
    return make_synthetic_cxr(out_dir, num_images=num_images, size=max(64, image_size), seed=seed, findings=findings)
