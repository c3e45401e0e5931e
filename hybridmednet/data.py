"""ChestX-ray14 datasets and transforms from the DATA section (finding, splitting and assembling: shared.cxr14)."""
from __future__ import annotations

from pathlib import Path

from torchvision.transforms import v2

from shared.cxr14 import FINDINGS, CXRSplits, locate_data, split_dataset
from shared.data import DataError, build_image_transform


def build_transform(data_cfg, train: bool) -> v2.Compose:
    """torchvision v2 pipeline. Training: random affine warp (+-10 degrees, scale 0.8-1, shift 5 %),
    centre crop, brightness/contrast, plus RandAugment and random erasing when ``use_albumentations``;
    never a left-right flip (the heart is on the left). Evaluation: resize only."""
    augmentation = "strong" if data_cfg["use_albumentations"] else "standard"
    return build_image_transform(data_cfg["image_size"], train=train, augmentation=augmentation, hflip=False)


def build_datasets(config) -> CXRSplits:
    """Patient-level train/val/test splits; training images get the augmenting transform. With ``DATA.demo``
    a synthetic set is generated once under ``train.output_dir``."""
    data = config.DATA
    if config.MODEL["num_classes"] != len(FINDINGS):
        raise DataError(f"MODEL.num_classes={config.MODEL['num_classes']} but ChestX-ray14 has "
                        f"{len(FINDINGS)} findings: {list(FINDINGS)}")
    image_dir, csv_path = locate_data(data["data_dir"], data["labels_file"],
                                      demo_dir=Path(config.train.output_dir) / "demo_data" if data["demo"] else None,
                                      demo_num_images=data["demo_num_images"], image_size=data["image_size"],
                                      seed=config.train.seed, keys=("DATA.data_dir", "DATA.labels_file", "DATA.demo"))
    records = split_dataset(image_dir, csv_path, fractions=(data["train_split"], data["val_split"], data["test_split"]),
                            seed=config.train.seed, train_val_list=data["train_val_list"], test_list=data["test_list"],
                            on_bad_image=data["on_bad_image"], on_bad_image_key="DATA.on_bad_image")
    return CXRSplits.from_records(records, build_transform(data, train=True), build_transform(data, train=False))
