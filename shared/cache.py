"""A preprocessed image cache: decode, convert and resize once, then read from a memory map.

Full-size chest X-rays (1024² PNG) cost tens of milliseconds each to decode; a training epoch over
112k of them keeps the CPUs, not the GPUs, busy. The cache stores every image already converted and
resized to the training size plus a margin (so random crops still have pixels to choose from) in one
uint8 NumPy memmap, with an index. ``bench/data_pipeline.py`` measures it against the raw files and
against Hugging Face ``datasets`` Arrow files (the memmap was faster for fixed-size arrays).

The cache folder name is a hash of everything that changes its content (the file list, the size,
the colour mode), so a changed image size builds a new cache instead of silently reusing the old one.
A build writes ``rows.partial`` plus a progress counter; an interrupted build resumes where it
stopped, and only a finished build is renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .checkpoint import _atomic_write
from .data import load_image

CACHE_VERSION = 1
CHANNELS = {"L": 1, "RGB": 3}


def cache_size_for(image_size: int, margin: float) -> int:
    """Stored side length: the training size plus ``margin`` (e.g. 0.15 -> 15 % larger)."""
    return int(round(image_size * (1 + margin)))


class ImageCache:
    """Square uint8 images ``[N, size, size(, 3)]`` in a memmap, addressed by source path."""

    def __init__(self, root: str | Path, paths: Sequence[str | Path], size: int, mode: str = "L"):
        if mode not in CHANNELS:
            raise ValueError(f"cache mode must be one of {list(CHANNELS)}, got {mode!r}")
        self.paths = [str(p) for p in paths]
        self.size, self.mode = size, mode
        key = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "size": size, "mode": mode,
                                         "files": [Path(p).name for p in self.paths]}).encode()).hexdigest()[:16]
        self.dir = Path(root) / f"{mode}_{size}px_{len(self.paths)}_{key}"
        self.shape = (len(self.paths), size, size) + ((3,) if mode == "RGB" else ())
        self._rows: np.ndarray | None = None  # opened lazily, once per (worker) process

    @property
    def ready(self) -> bool:
        return (self.dir / "meta.json").is_file()

    def build(self, progress: bool = True) -> "ImageCache":
        """Fill the cache (resuming an interrupted build). Safe to call again when it is ready."""
        if self.ready:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        partial, counter = self.dir / "rows.partial", self.dir / "progress.json"
        done = json.loads(counter.read_text())["done"] if counter.is_file() and partial.is_file() else 0
        rows = np.lib.format.open_memmap(partial, mode="r+" if done else "w+", dtype=np.uint8, shape=self.shape)
        bar = tqdm(total=len(self.paths), initial=done, desc=f"caching {self.size}px images", disable=not progress)
        for start in range(done, len(self.paths), 256):
            stop = min(start + 256, len(self.paths))
            for i in range(start, stop):
                image = load_image(self.paths[i], mode=self.mode)
                rows[i] = np.asarray(image.resize((self.size, self.size), Image.BICUBIC))
            rows.flush()
            _atomic_write(counter, lambda tmp: Path(tmp).write_text(json.dumps({"done": stop})))
            bar.update(stop - start)
        bar.close()
        del rows
        os.replace(partial, self.dir / "rows.npy")
        counter.unlink()
        meta = {"version": CACHE_VERSION, "size": self.size, "mode": self.mode, "count": len(self.paths),
                "files": self.paths}
        _atomic_write(self.dir / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta)))
        return self

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        if self._rows is None:
            if not self.ready:
                raise FileNotFoundError(f"image cache {self.dir} is not built; run the project's prepare_cache")
            self._rows = np.load(self.dir / "rows.npy", mmap_mode="r")
        return Image.fromarray(np.asarray(self._rows[index]))  # mode follows the array: L or RGB

    def __getstate__(self):  # DataLoader workers re-open the memmap instead of pickling it
        return {**self.__dict__, "_rows": None}
