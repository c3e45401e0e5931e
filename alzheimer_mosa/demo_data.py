"""Small synthetic brain-like NIfTI volumes whose classes differ learnably (for demos and tests).

Each volume is an ellipsoidal "brain" with a dark central "ventricle" on a zero background, with random
size, position, intensity scale and noise. The ventricle radius grows with the class index (as
ventricles enlarge with atrophy in AD), so class 0 looks "CN" and the last class looks "AD".
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np

DEMO_SPLIT_SIZES = {"train": 16, "val": 8, "test": 8}  # volumes per class
DEMO_VOLUME_SIZE = 40


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Boolean mask of the ellipsoid; ``grid`` is (3, X, Y, Z) voxel coordinates."""
    return (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0


def synthetic_volume(label: int, num_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, size) float32 volume of class ``label``."""
    grid = np.indices((size, size, size), dtype=np.float32)
    centre = size / 2 + rng.uniform(-2, 2, 3)
    brain = _ellipsoid(grid, centre, size * rng.uniform(0.32, 0.40, 3))
    # Ventricle radius, as a fraction of the volume: 0.08 for class 0 up to 0.18 for the last class.
    fraction = 0.08 + 0.10 * label / max(num_classes - 1, 1) + rng.uniform(-0.015, 0.015)
    ventricle = _ellipsoid(grid, centre, size * fraction * np.array([1.0, 1.3, 0.8]))
    volume = np.where(brain, rng.uniform(0.6, 0.8), 0.0)
    volume = np.where(ventricle, 0.15, volume)
    volume = volume + brain * rng.normal(0.0, 0.05, volume.shape)
    return (volume * rng.uniform(50, 150)).astype(np.float32)  # arbitrary scanner units


def write_demo_dataset(root: Path, class_names: Sequence[str], split_sizes: Mapping[str, int] = DEMO_SPLIT_SIZES,
                       size: int = DEMO_VOLUME_SIZE, seed: int = 0) -> Path:
    """Write ``root/<split>/<class>/demo_<split>_<i>.nii.gz`` (1 mm isotropic, RAS+); returns ``root``. A file
    name is a subject (:class:`~alzheimer_mosa.data_loader.VolumeRecord`), so no name is in two splits."""
    rng = np.random.default_rng(seed)
    for split, per_class in split_sizes.items():
        for label, name in enumerate(class_names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                volume = synthetic_volume(label, len(class_names), size, rng)
                nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / f"demo_{split}_{i:03d}.nii.gz")
    return root


def ensure_demo_dataset(root: Path, class_names: Sequence[str], seed: int = 0) -> Path:
    """The demo set in ``root``, written first if it is not complete there."""
    complete = all(
        len(list((root / split / name).glob("*.nii.gz"))) >= per_class
        for split, per_class in DEMO_SPLIT_SIZES.items() for name in class_names
    )
    return root if complete else write_demo_dataset(root, class_names, seed=seed)
