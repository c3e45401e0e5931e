"""ChestX-ray14 datasets for training, from the config's data section (the parsing lives in shared.cxr14)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cache import ImageCache
from shared.cxr14 import FINDINGS, ChestXray14Dataset, CXRRecords, demo_cxr_paths, load_records, split_records
from shared.data import DataError, build_image_transform, pre_crop_size


@dataclass
class DataConfig:
    image_dir: str = "images"  # searched recursively (NIH ships images_001/images/...)
    labels_csv: str = "filtered_labels.csv"  # NIH Data_Entry_2017.csv format or one column per finding
    findings: list[str] = field(default_factory=lambda: list(FINDINGS))
    image_size: int = 512
    augmentation: str = "standard"  # none | minimal | standard | strong (never flipped left-right)
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # by patient
    train_val_list: str = ""  # NIH's official split files; both or neither
    test_list: str = ""
    on_bad_image: str = "error"  # error | skip (skip decodes every image once up front)
    cache_dir: str = ""  # preprocessed cache (prepare_cache.py); used when built, raw files otherwise
    normalize_on_device: bool = True  # loaders ship uint8 grayscale; the task normalises on the GPU (ImageNormalize)
    crop_margin: float = 0.15  # training crops come from images resized to image_size * (1 + margin); so does the cache
    demo: bool = False  # generate and use a synthetic demo set under <output_dir>/demo_data
    demo_num_images: int = 900


@dataclass
class CXRSplits:
    train: ChestXray14Dataset
    val: ChestXray14Dataset
    test: ChestXray14Dataset
    findings: list[str]


def resolve_data_paths(cfg: DataConfig, output_dir: str | Path, seed: int) -> tuple[Path, Path]:
    """Where the images and labels are; with ``demo: true`` generate them first (once)."""
    if cfg.demo:
        return demo_cxr_paths(Path(output_dir) / "demo_data", cfg.demo_num_images, cfg.image_size, seed, cfg.findings)
    image_dir, csv_path = Path(cfg.image_dir), Path(cfg.labels_csv)
    if not image_dir.is_dir() or not csv_path.is_file():
        raise DataError(f"ChestX-ray14 data not found (data.image_dir={image_dir}, data.labels_csv={csv_path}). "
                        "Point these at your copy, or run the synthetic demo with --data.demo true (make demo).")
    return image_dir, csv_path


def split_cxr_records(cfg: DataConfig, output_dir: str | Path, seed: int = 42) -> tuple[CXRRecords, ...]:
    """Train/val/test records by patient (or NIH's official lists)."""
    image_dir, csv_path = resolve_data_paths(cfg, output_dir, seed)
    records = load_records(csv_path, image_dir, cfg.findings, cfg.on_bad_image)
    return split_records(records, cfg.split_fractions, seed, cfg.train_val_list or None, cfg.test_list or None)


def split_caches(cfg: DataConfig, splits: tuple[CXRRecords, ...]) -> list[ImageCache | None]:
    """One cache per split, keyed by its images and the cached size; None when caching is off."""
    if not cfg.cache_dir:
        return [None] * len(splits)
    size = pre_crop_size(cfg.image_size, cfg.crop_margin)
    return [ImageCache(cfg.cache_dir, records.paths, size, mode="L") for records in splits]


def build_datasets(cfg: DataConfig, output_dir: str | Path, seed: int = 42) -> CXRSplits:
    """Patient-level train/val/test datasets. Under several processes call it inside
    ``process_state().main_process_first()`` so only one process writes the demo set."""
    splits = split_cxr_records(cfg, output_dir, seed)
    caches = split_caches(cfg, splits)
    if any(cache is not None and not cache.ready for cache in caches):
        print(f"no finished image cache in {cfg.cache_dir} for image_size {cfg.image_size}: reading the original "
              "files (build it once with convnext_cxr/prepare_cache.py)")
        caches = [None] * len(splits)
    normalize = not cfg.normalize_on_device
    train_tf = build_image_transform(cfg.image_size, train=True, augmentation=cfg.augmentation, hflip=False,
                                    crop_margin=cfg.crop_margin, normalize=normalize)
    eval_tf = build_image_transform(cfg.image_size, train=False, normalize=normalize)
    transforms = (train_tf, eval_tf, eval_tf)
    train, val, test = (ChestXray14Dataset(r, tf, c) for r, tf, c in zip(splits, transforms, caches))
    return CXRSplits(train, val, test, list(cfg.findings))
