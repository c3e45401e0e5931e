"""Data pipeline: images/s from raw full-size PNGs vs the preprocessed cache, with 0, 1 and 2 workers.

The script writes its own 1024x1024 grayscale PNGs (chest-X-ray-like: smooth anatomy plus noise) and
feeds them through convnext_cxr's training dataset: decode, resize to the training size plus a margin,
one random affine warp, centre crop, brightness/contrast, delivered as uint8 grayscale (the 3-channel
normalisation is a batched op on the GPU, ImageNormalize, not part of the data pipeline). The same
dataset then reads the memmap cache, which stores the image after the first resize; the same rows also
come from Hugging Face ``datasets`` Arrow files for comparison. Rates are steady state (after a warm-up
pass) and the median of alternating rounds. A 3D section compares per-epoch torchio preprocessing of
NIfTI volumes with reading preprocessed volumes (see alzheimer_mosa).

    python bench/data_pipeline.py [--images 64 --image-size 224 --workers 0 1 2]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from bench.common import print_table, write_json
from shared.cache import ImageCache
from shared.cxr14 import CXRRecords, ChestXray14Dataset, FINDINGS
from shared.config import config_from_dict
from shared.data import build_image_transform, pre_crop_size, single_threaded_worker


def write_pngs(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 90 + 60 * np.exp(-(((yy - 0.55) / 0.3) ** 2 + ((xx - 0.5) / 0.35) ** 2))
    paths = []
    for i in range(count):
        image = np.clip(base + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)
        paths.append(folder / f"{i:08d}_000.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def images_per_second(dataset, workers: int, batch_size: int, epochs: int = 2) -> float:
    """Steady-state throughput of full passes, after one untimed pass that starts the (persistent) workers
    and warms the caches, as in a long training run. The loader is set up as the shared Engine sets up its
    own: objects alive before the workers fork are frozen out of the garbage collector, and each worker is
    single-threaded."""
    gc.freeze()
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0, worker_init_fn=single_threaded_worker)
        for _ in loader:
            pass
        start = time.perf_counter()
        seen = 0
        for _ in range(epochs):
            for images, _ in loader:
                seen += images.shape[0]
        return seen / (time.perf_counter() - start)
    finally:
        gc.unfreeze()


def interleaved_rates(datasets: dict[str, Dataset], workers: int, batch_size: int, repeats: int,
                      epochs: int = 2) -> dict[str, float]:
    """Median images/s of each dataset over ``repeats`` rounds that alternate between them, so a change in
    the machine's load during the run hits every pipeline alike."""
    rates = {name: [] for name in datasets}
    for _ in range(repeats):
        for name, dataset in datasets.items():
            rates[name].append(images_per_second(dataset, workers, batch_size, epochs))
    return {name: statistics.median(values) for name, values in rates.items()}


class ArrowRows(torch.utils.data.Dataset):
    """The cached rows read back from a Hugging Face ``datasets`` Arrow table instead of the memmap."""

    def __init__(self, table, labels, transform):
        self.table, self.labels, self.transform = table, labels, transform

    def __len__(self):
        return len(self.table)

    def __getitem__(self, index):
        image = Image.fromarray(np.asarray(self.table[index]["image"], dtype=np.uint8))  # grayscale, as the memmap
        return self.transform(image), torch.from_numpy(self.labels[index])


def arrow_copy(cache: ImageCache, folder: Path):
    import datasets
    rows = cache.arrays()["rows"]
    features = datasets.Features({"image": datasets.Array2D(shape=rows.shape[1:], dtype="uint8")})
    table = datasets.Dataset.from_dict({"image": list(np.asarray(rows))}, features=features)
    table.save_to_disk(folder)
    return datasets.load_from_disk(folder).with_format("numpy")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--source-size", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--skip-3d", action="store_true", help="only the 2D chest X-ray pipeline")
    parser.add_argument("--volumes", type=int, default=16)
    parser.add_argument("--volume-source-size", type=int, default=128)
    parser.add_argument("--volume-size", type=int, default=64)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    paths = write_pngs(work / "png", args.images, args.source_size)
    labels = (np.random.default_rng(1).random((len(paths), len(FINDINGS))) > 0.8).astype(np.float32)
    records = CXRRecords([p.name for p in paths], paths, labels, np.array([p.stem[:8] for p in paths]))
    # convnext_cxr's default: the dataset delivers augmented uint8 grayscale; ImageNormalize runs on the GPU
    transform = build_image_transform(args.image_size, train=True, augmentation="standard", hflip=False,
                                      normalize=False)
    cache = ImageCache(work / "cache", paths, pre_crop_size(args.image_size, 0.15))
    build_seconds = time.perf_counter()
    cache.build(progress=False)
    build_seconds = time.perf_counter() - build_seconds
    arrow = arrow_copy(cache, work / "arrow")

    datasets = {"raw": ChestXray14Dataset(records, transform), "cached": ChestXray14Dataset(records, transform, cache),
                "arrow": ArrowRows(arrow, labels, transform)}
    rows, results = [], []
    for workers in args.workers:
        rates = interleaved_rates(datasets, workers, args.batch_size, args.repeats)
        raw, cached, via_arrow = rates["raw"], rates["cached"], rates["arrow"]
        rows.append([workers, raw, cached, via_arrow, cached / raw, cached / via_arrow])
        results.append({"workers": workers, "raw_png": raw, "memmap_cache": cached, "arrow_cache": via_arrow,
                        "cache_vs_raw": cached / raw, "memmap_vs_arrow": cached / via_arrow})
    print(f"\n2D: {args.images} PNGs of {args.source_size}px -> {args.image_size}px training crops; "
          f"cache build {build_seconds:.1f}s ({args.images / build_seconds:.1f} img/s, one-time)")
    table = print_table(["workers", "raw PNG img/s", "memmap cache img/s", "Arrow cache img/s",
                         "cache / raw", "memmap / Arrow"], rows)
    payload = {"benchmark": "data_pipeline", "args": vars(args), "2d": results, "2d_table": table,
               "cache_build_seconds": build_seconds}
    if not args.skip_3d:
        payload.update(volume_benchmark(work, args.workers, args.volumes, args.volume_source_size,
                                        args.volume_size, args.repeats))
    write_json("data_pipeline", payload, args.out)
    return payload


def volume_benchmark(work: Path, workers: Sequence[int], volumes: int, source_size: int, target_size: int,
                     repeats: int) -> dict:
    """3D: alzheimer_mosa's torchio pipeline from NIfTI files every epoch vs from the volume cache."""
    from alzheimer_mosa.config import Config
    from alzheimer_mosa.data_loader import build_datasets
    from alzheimer_mosa.demo_data import write_demo_dataset
    from alzheimer_mosa.prepare_cache import prepare

    per_class = max(1, volumes // 2)
    root = write_demo_dataset(work / "nifti", ["CN", "AD"], {"train": per_class, "val": 1}, size=source_size)
    settings = {"data": {"data_root": str(root), "target_size": [target_size] * 3}}
    raw_cfg = config_from_dict(Config, settings)
    cached_cfg = config_from_dict(Config, {"data": {**settings["data"], "cache_dir": str(work / "volume_cache")}})
    prepare(cached_cfg)
    raw, cached = build_datasets(raw_cfg)["train"], build_datasets(cached_cfg)["train"]
    rows, results = [], []
    eval_transforms = (build_datasets(raw_cfg)["val"].transform, build_datasets(cached_cfg)["val"].transform)
    for pipeline, (raw.transform, cached.transform) in (("train (augmented)", (raw.transform, cached.transform)),
                                                        ("eval (no augmentation)", eval_transforms)):
        for w in workers:
            rates = interleaved_rates({"raw": raw, "cached": cached}, w, 2, repeats, epochs=1)
            raw_rate, cached_rate = rates["raw"], rates["cached"]
            rows.append([pipeline, w, raw_rate, cached_rate, cached_rate / raw_rate])
            results.append({"pipeline": pipeline, "workers": w, "nifti_per_epoch": raw_rate,
                            "volume_cache": cached_rate, "cache_vs_raw": cached_rate / raw_rate})
    print(f"\n3D: {len(raw)} NIfTI volumes of {source_size}^3 -> {target_size}^3")
    table = print_table(["pipeline", "workers", "torchio from NIfTI vol/s", "volume cache vol/s", "cache / raw"], rows)
    return {"3d": results, "3d_table": table}


if __name__ == "__main__":
    main()
