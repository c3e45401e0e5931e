"""ChestX-ray14 datasets for training, from the config's data section (parsing and splits: shared.cxr14)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cache import ImageCache
from shared.cxr14 import FINDINGS, CXRRecords, CXRSplits, locate_data, split_dataset
from shared.data import build_image_transform, pre_crop_size


@dataclass
class DataConfig:
    image_dir: str = "images"  # searched recursively (NIH ships images_001/images/...)
    labels_csv: str = "filtered_labels.csv"  # NIH Data_Entry_2017.csv format or one column per finding
    findings: list[str] = field(default_factory=lambda: list(FINDINGS))  # the labels, in output order
    image_size: int = 512  # training and evaluation resolution (square), pixels
    augmentation: str = "standard"  # none | minimal | standard | strong (never flipped left-right)
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # train/val/test, by patient
    train_val_list: str = ""  # NIH's official train_val_list.txt; give both lists or neither
    test_list: str = ""  # NIH's official test_list.txt (the test split); validation comes out of train_val_list
    on_bad_image: str = "error"  # error | skip (skip decodes every image once up front)
    cache_dir: str = ""  # preprocessed cache (prepare_cache.py); used when built, raw files otherwise
    normalize_on_device: bool = True  # loaders ship uint8 grayscale; the task normalises on the GPU (ImageNormalize)
    crop_margin: float = 0.15  # training crops come from images resized to image_size * (1 + margin); so does the cache
    demo: bool = False  # generate and use a synthetic demo set under <output_dir>/demo_data
    demo_num_images: int = 900  # images in the synthetic demo set (3 per patient)


def split_cxr_records(cfg: DataConfig, output_dir: str | Path, seed: int = 42) -> tuple[CXRRecords, ...]:
    """Train/val/test records by patient (or NIH's official lists); with ``demo`` the demo set, made once."""
    image_dir, csv_path = locate_data(cfg.image_dir, cfg.labels_csv,
                                      demo_dir=Path(output_dir) / "demo_data" if cfg.demo else None,
                                      demo_num_images=cfg.demo_num_images, image_size=cfg.image_size, seed=seed,
                                      findings=cfg.findings)
    return split_dataset(image_dir, csv_path, findings=cfg.findings, fractions=cfg.split_fractions, seed=seed,
                         train_val_list=cfg.train_val_list, test_list=cfg.test_list, on_bad_image=cfg.on_bad_image)


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
    return CXRSplits.from_records(splits, train_tf, eval_tf, caches)
