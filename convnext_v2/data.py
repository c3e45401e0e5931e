"""Class-folder image data: the dataset, seeded splits and the source document's augmentations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from shared import ConfigError, IMAGENET_MEAN, IMAGENET_STD, SplitConfig, build_image_transform, group_ids, \
    load_image, scan_class_folders, stratified_split

AUTO_AUGMENT = {
    "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
    "randaugment": lambda: v2.RandAugment(num_ops=2, magnitude=9),
    "trivialaugment": lambda: v2.TrivialAugmentWide(),
}


@dataclass
class AugmentConfig:
    """Training augmentations (the source document's list); 0 or "none" switches one off."""

    crop: str = "random_resized"  # random_resized (RandomResizedCrop) | random (resize, pad, RandomCrop)
    min_scale: float = 0.25  # RandomResizedCrop: smallest crop area as a fraction of the image
    hflip: bool = True  # RandomHorizontalFlip
    rotation: float = 15.0  # RandomRotation: max degrees
    translate: float = 0.1  # RandomAffine: max shift as a fraction of the size
    color_jitter: float = 0.3  # ColorJitter: brightness, contrast and saturation strength
    auto_augment: str = "none"  # none | autoaugment | randaugment | trivialaugment
    random_erasing: float = 0.25  # RandomErasing probability (on the normalised tensor)


@dataclass
class ClassFolderSplit(SplitConfig):
    """How ``data_dir`` is split without ``val_dir``: the parts' fractions, by image or by patient."""

    fractions: list[float] = field(default_factory=lambda: [0.8, 0.2])  # train/val[/test] fractions of data_dir

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.fractions) not in (2, 3):
            raise ConfigError(f"split.fractions needs 2 (train/val) or 3 (train/val/test) fractions, "
                              f"got {self.fractions}")


def build_train_transform(image_size: int, cfg: AugmentConfig) -> v2.Compose:
    """PIL image -> augmented, normalised float tensor (3, image_size, image_size)."""
    if cfg.crop == "random_resized":
        steps = [v2.RandomResizedCrop(image_size, scale=(cfg.min_scale, 1.0), antialias=True)]
    elif cfg.crop == "random":
        steps = [
            v2.Resize((image_size, image_size), antialias=True),
            v2.RandomCrop(image_size, padding=image_size // 8),
        ]
    else:
        raise ValueError(f"augment.crop must be 'random_resized' or 'random', got {cfg.crop!r}")
    if cfg.auto_augment != "none" and cfg.auto_augment not in AUTO_AUGMENT:
        raise ValueError(
            f"augment.auto_augment must be 'none' or one of {sorted(AUTO_AUGMENT)}, got {cfg.auto_augment!r}"
        )
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.rotation > 0:
        steps.append(v2.RandomRotation(cfg.rotation))
    if cfg.translate > 0:
        steps.append(v2.RandomAffine(degrees=0, translate=(cfg.translate, cfg.translate)))
    if cfg.color_jitter > 0:
        strength = cfg.color_jitter
        steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    if cfg.auto_augment != "none":
        steps.append(AUTO_AUGMENT[cfg.auto_augment]())
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if cfg.random_erasing > 0:
        steps.append(v2.RandomErasing(p=cfg.random_erasing))
    return v2.Compose(steps)


def build_eval_transform(image_size: int) -> v2.Compose:
    """PIL image -> resized, normalised float tensor (3, image_size, image_size)."""
    return build_image_transform(image_size, train=False)


class ClassFolderDataset(Dataset):
    """(image tensor, class index) pairs for a list of (path, class index) samples; ``groups`` are their
    patient ids (default: each image its own group)."""

    def __init__(self, samples: Sequence[tuple[Path, int]], class_names: Sequence[str], transform: Callable,
                 groups: Sequence[str] | None = None):
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.transform = transform
        self._groups = list(groups) if groups is not None else self.sample_ids

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(load_image(path)), label

    @property
    def labels(self) -> np.ndarray:
        return np.array([label for _, label in self.samples], dtype=np.int64)

    @property
    def sample_ids(self) -> list[str]:
        """The image paths in index order (the ``sample`` column of ``results/<split>_predictions.csv``)."""
        return [str(path) for path, _ in self.samples]

    @property
    def groups(self) -> list[str]:
        """Patient ids in index order (``split.group_pattern``), else the image paths: no id may be in two parts."""
        return self._groups


def split_class_folder(
    data_dir: str | Path, fractions: Sequence[float], seed: int, transforms: Sequence[Callable], group_pattern: str = ""
) -> list[ClassFolderDataset]:
    """``data_dir/<class>/<image>`` split into stratified parts (e.g. 0.7/0.15/0.15), one transform per part;
    with ``group_pattern`` (see ``shared.SplitConfig``) every patient's images stay in one part."""
    if len(transforms) != len(fractions):
        raise ValueError(f"{len(fractions)} split fractions need {len(fractions)} transforms, got {len(transforms)}")
    samples, class_names = scan_class_folders(data_dir)
    groups = group_ids([path for path, _ in samples], group_pattern)
    parts = stratified_split([label for _, label in samples], fractions, seed, groups)
    return [
        ClassFolderDataset([samples[i] for i in part], class_names, transform, [groups[i] for i in part])
        for part, transform in zip(parts, transforms)
    ]


def class_folder(
    data_dir: str | Path, transform: Callable, class_names: Sequence[str] | None = None, group_pattern: str = ""
) -> ClassFolderDataset:
    """All of ``data_dir/<class>/<image>``; with ``class_names``, its classes must be exactly those."""
    samples, found = scan_class_folders(data_dir)
    if class_names is not None and found != list(class_names):
        raise ValueError(f"class folders of {data_dir} are {found}, expected the training classes {list(class_names)}")
    return ClassFolderDataset(samples, found, transform, group_ids([path for path, _ in samples], group_pattern))
