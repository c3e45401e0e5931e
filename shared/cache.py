"""A preprocessed image cache: decode, convert and resize once, then read from a memory map.

Full-size chest X-rays (1024² PNG) cost tens of milliseconds each to decode; a training epoch over
112k of them keeps the CPUs, not the GPUs, busy. The cache stores every image already converted and
resized to ``shared.data.pre_crop_size`` (the training size plus a margin, so random crops still have
pixels to choose from; the first step of the training transform, which then has nothing left to do)
in one uint8 NumPy memmap, with an index. ``bench/data_pipeline.py`` measures it against the raw files and
against Hugging Face ``datasets`` Arrow files (the memmap was faster for fixed-size arrays).

The cache folder name is a hash of everything that changes its content (the file list, the size,
the colour mode), so a changed image size builds a new cache instead of silently reusing the old one.
A build writes ``*.partial`` files plus a progress counter; an interrupted build resumes where it
stopped, and only a finished build is renamed into place. ``ArrayCache`` is the generic part, also
used for preprocessed 3D volumes (alzheimer_mosa).
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

from .io import atomic_write as _atomic_write
from .data import load_image

CACHE_VERSION = 1
CHANNELS = {"L": 1, "RGB": 3}


class ArrayCache:
    """Fixed-shape arrays, one row per source file, in ``.npy`` memmaps built once (resumably).

    Subclasses say what each row holds (``fields``: name -> (row shape, dtype)) and how to compute
    it (``compute_row``); the folder name hashes ``key`` so different preprocessing never collides.
    """

    fields: dict[str, tuple[tuple[int, ...], type]] = {}

    def __init__(self, root: str | Path, paths: Sequence[str | Path], key: dict, label: str):
        self.paths = [str(p) for p in paths]
        digest = hashlib.sha256(json.dumps({"version": CACHE_VERSION, **key,
                                            "files": self.paths}).encode()).hexdigest()[:16]
        self.dir = Path(root) / f"{label}_{len(self.paths)}_{digest}"
        self.key = key
        self._arrays: dict[str, np.ndarray] | None = None  # opened lazily, once per (worker) process

    def compute_row(self, index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        return (self.dir / "meta.json").is_file()

    def build(self, progress: bool = True, chunk: int = 256) -> "ArrayCache":
        """Fill the cache (resuming an interrupted build). Safe to call again when it is ready."""
        if self.ready:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        counter = self.dir / "progress.json"
        partial = {name: self.dir / f"{name}.partial" for name in self.fields}
        resuming = counter.is_file() and all(p.is_file() for p in partial.values())
        done = json.loads(counter.read_text())["done"] if resuming else 0
        arrays = {name: np.lib.format.open_memmap(partial[name], mode="r+" if done else "w+", dtype=dtype,
                                                  shape=(len(self.paths), *shape))
                  for name, (shape, dtype) in self.fields.items()}
        bar = tqdm(total=len(self.paths), initial=done, desc=f"caching {self.dir.name}", disable=not progress)
        for start in range(done, len(self.paths), chunk):
            stop = min(start + chunk, len(self.paths))
            for i in range(start, stop):
                for name, row in self.compute_row(i).items():
                    arrays[name][i] = row
            for array in arrays.values():
                array.flush()
            _atomic_write(counter, lambda tmp: Path(tmp).write_text(json.dumps({"done": stop})))
            bar.update(stop - start)
        bar.close()
        del arrays
        for name, path in partial.items():
            os.replace(path, self.dir / f"{name}.npy")
        counter.unlink()
        meta = {"version": CACHE_VERSION, **self.key, "count": len(self.paths), "files": self.paths}
        _atomic_write(self.dir / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta)))
        return self

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            if not self.ready:
                raise FileNotFoundError(f"cache {self.dir} is not built; run the project's cache preparation")
            self._arrays = {name: np.load(self.dir / f"{name}.npy", mmap_mode="r") for name in self.fields}
        return self._arrays

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self):  # DataLoader workers re-open the memmaps instead of pickling them
        return {**self.__dict__, "_arrays": None}


class ImageCache(ArrayCache):
    """Square uint8 images ``[N, size, size(, 3)]``, addressed by source index, read back as PIL."""

    def __init__(self, root: str | Path, paths: Sequence[str | Path], size: int, mode: str = "L"):
        if mode not in CHANNELS:
            raise ValueError(f"cache mode must be one of {list(CHANNELS)}, got {mode!r}")
        self.size, self.mode = size, mode
        self.fields = {"rows": ((size, size) + ((3,) if mode == "RGB" else ()), np.uint8)}
        super().__init__(root, paths, {"size": size, "mode": mode}, label=f"{mode}_{size}px")

    def compute_row(self, index: int) -> dict[str, np.ndarray]:
        image = load_image(self.paths[index], mode=self.mode)
        return {"rows": np.asarray(image.resize((self.size, self.size), Image.BICUBIC))}

    def __getitem__(self, index: int) -> Image.Image:
        return Image.fromarray(np.asarray(self.arrays()["rows"][index]))  # mode follows the array: L or RGB
