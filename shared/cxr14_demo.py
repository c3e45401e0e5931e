"""A synthetic, learnable ChestX-ray14-like demo set: ``images/*.png`` + NIH-style ``Data_Entry_2017.csv``.

Each image is a noisy thorax (two bright lung fields); each present finding adds its own shape in its own
region, so a small model learns every finding in a few CPU minutes. ``convnext_cxr`` (``data.demo``) and
``hybridmednet`` (``DATA.demo``) train on it when no dataset is given; the tests use it as tiny data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .cxr14 import FINDINGS, NO_FINDING


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
