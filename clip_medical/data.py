"""Class-folder images, their class texts, and the train/validation splits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shared import DataError, group_ids, load_image, read_json, scan_class_folders, stratified_folds, stratified_split

logger = logging.getLogger(__name__)

CLASS_NAME_PLACEHOLDER = "{class_name}"


def format_template(template: str, class_name: str) -> str:
    """``template`` with ``{class_name}`` filled in (other braces are left alone)."""
    if CLASS_NAME_PLACEHOLDER not in template:
        raise ValueError(f"text template {template!r} has no {CLASS_NAME_PLACEHOLDER} placeholder, "
                         f"so every class would get the same text; e.g. '这是一张{{class_name}}的医学图像'")
    return template.replace(CLASS_NAME_PLACEHOLDER, class_name)


def load_class_texts_file(path: str | Path) -> dict[str, str]:
    """Read ``{"class name": "description", ...}`` from a JSON file."""
    texts = read_json(path, "class texts file", DataError)
    if not isinstance(texts, dict):
        raise DataError(f"class texts file {path} must hold a JSON object {{\"class\": \"description\"}}, "
                        f"got {type(texts).__name__}")
    bad = [name for name, text in texts.items() if not isinstance(text, str) or not text.strip()]
    if bad:
        raise DataError(f"class texts file {path}: empty or non-string description for {bad}")
    return texts


def resolve_class_texts(class_names: list[str], class_texts_file: str | None = None,
                        text_template: str | None = None) -> list[str]:
    """One text per class: from the JSON file, else from the template, else the class name itself."""
    if class_texts_file:
        if text_template:
            logger.info("both a class texts file and a template were given; using the file %s", class_texts_file)
        texts = load_class_texts_file(class_texts_file)
        missing = [name for name in class_names if name not in texts]
        if missing:
            raise DataError(f"class texts file {class_texts_file} has no description for class(es) {missing}; "
                            f"it must cover every class folder: {class_names}")
        extra = sorted(set(texts) - set(class_names))
        if extra:
            logger.warning("class texts file %s describes classes without a folder (ignored): %s",
                           class_texts_file, extra)
        resolved = [texts[name] for name in class_names]
    elif text_template:
        resolved = [format_template(text_template, name) for name in class_names]
    else:
        resolved = list(class_names)
    duplicated = sorted({text for text in resolved if resolved.count(text) > 1})
    if duplicated:
        raise DataError(f"several classes share the text(s) {duplicated}; zero-shot classification "
                        "needs a distinct text per class")
    return resolved


@dataclass
class ClassFolderData:
    """Everything read from ``--data-dir``: samples, class names (sorted folder names) and their texts, and each
    image's patient id from ``split.group_pattern`` (the path itself without one)."""

    paths: list[Path]
    labels: np.ndarray  # [N] class indices
    class_names: list[str]
    class_texts: list[str]
    groups: list[str]  # [N] patient ids: a split keeps each patient's images together
    group_pattern: str = ""  # split.group_pattern, applied to --test-dir as well

    @classmethod
    def scan(cls, data_dir: str, class_texts_file: str | None = None, text_template: str | None = None,
             group_pattern: str = ""):
        samples, class_names = scan_class_folders(data_dir)  # refuses a single class folder
        paths = [path for path, _ in samples]
        labels = np.array([label for _, label in samples], dtype=np.int64)
        return cls(paths, labels, class_names, resolve_class_texts(class_names, class_texts_file, text_template),
                   group_ids(paths, group_pattern), group_pattern)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names)}

    def subset(self, indices: np.ndarray, transform) -> "ImageLabelDataset":
        return ImageLabelDataset([self.paths[i] for i in indices], self.labels[indices], transform,
                                 [self.groups[i] for i in indices])

    def held_out(self, data_dir: str, transform) -> "ImageLabelDataset":
        """Another class-folder root with exactly these classes (``--test-dir``)."""
        samples, class_names = scan_class_folders(data_dir)
        if class_names != self.class_names:
            raise DataError(f"{data_dir} has the classes {class_names}, but the training data {self.class_names}")
        paths = [path for path, _ in samples]
        return ImageLabelDataset(paths, np.array([label for _, label in samples]), transform,
                                 group_ids(paths, self.group_pattern))


class ImageLabelDataset(Dataset):
    """(image tensor [3, H, W], class index) pairs; the image is read and transformed on access. ``labels`` and
    ``groups`` (patient ids, default: the paths) are per image, in index order."""

    def __init__(self, paths: list[Path], labels: np.ndarray, transform, groups: list[str] | None = None):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.labels, self.transform = list(paths), np.asarray(labels), transform
        self.groups = list(groups) if groups is not None else self.sample_ids

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def sample_ids(self) -> list[str]:
        """File paths in index order (the sample column of shared.evaluate_best's predictions CSV)."""
        return [str(path) for path in self.paths]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_image(self.paths[index])), int(self.labels[index])


def train_val_split(labels: np.ndarray, val_fraction: float, seed: int,
                    groups: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split, by patient when ``groups`` hold several images. The validation part comes back
    in a fixed random order: files are sorted by class, and single-class validation batches would distort the
    contrastive val loss."""
    train, val = stratified_split(labels, [1 - val_fraction, val_fraction], seed, groups)
    return train, np.random.default_rng(seed).permutation(val)


def cross_validation_folds(labels: np.ndarray, n_splits: int, seed: int,
                           groups: list[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (shuffled, seeded) folds, by patient when ``groups`` hold several images; validation parts
    in a fixed random order as above."""
    groups = np.asarray(groups) if groups is not None else np.arange(len(labels))
    per_class = [len(set(groups[labels == label])) for label in np.unique(labels)]
    if min(per_class) < n_splits:
        unit = "images" if len(set(groups)) == len(groups) else "patients (split.group_pattern)"
        raise DataError(f"--n-splits {n_splits} needs at least {n_splits} {unit} in every class; "
                        f"the smallest class has {min(per_class)}")
    rng = np.random.default_rng(seed)
    return [(train, rng.permutation(val)) for train, val in stratified_folds(labels, n_splits, seed, groups)]


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weight 1 / (size of its class): every class is drawn equally often."""
    counts = np.bincount(labels)
    return 1.0 / counts[labels]
