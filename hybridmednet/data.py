"""ChestX-ray14 datasets and transforms from the DATA section (CSV parsing and splits live in shared.cxr14)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from torchvision.transforms import v2

from shared.cxr14 import FINDINGS, ChestXray14Dataset, demo_cxr_paths, load_records, split_records
from shared.data import DataError, build_image_transform


class CXRSplits(NamedTuple):
    train: ChestXray14Dataset
    val: ChestXray14Dataset
    test: ChestXray14Dataset


def build_transform(data_cfg, train: bool) -> v2.Compose:
    """torchvision v2 pipeline. Training: random affine warp (+-10 degrees, scale 0.8-1, shift 5 %),
    centre crop, brightness/contrast, plus RandAugment and random erasing when ``use_albumentations``;
    never a left-right flip (the heart is on the left). Evaluation: resize only."""
    augmentation = "strong" if data_cfg["use_albumentations"] else "standard"
    return build_image_transform(data_cfg["image_size"], train=train, augmentation=augmentation, hflip=False)


def resolve_data_paths(config) -> tuple[Path, Path]:
    """(image folder, label CSV); with ``DATA.demo`` a synthetic set is generated once under the run folder."""
    data = config.DATA
    if data["demo"]:
        return demo_cxr_paths(Path(config.CHECKPOINT["save_dir"]) / "demo_data", data["demo_num_images"],
                              data["image_size"], config.TRAIN["seed"])
    image_dir, csv_path = Path(data["data_dir"]), Path(data["labels_file"])
    if not image_dir.is_dir() or not csv_path.is_file():
        raise DataError(
            f"ChestX-ray14 data not found: DATA.data_dir={image_dir} (folder), DATA.labels_file={csv_path} (CSV). "
            "Pass your copy with --set DATA.data_dir=... --set DATA.labels_file=..., or try the synthetic "
            "demo with --set DATA.demo=true")
    return image_dir, csv_path


def build_datasets(config) -> CXRSplits:
    """Patient-level train/val/test splits; training images get the augmenting transform."""
    data = config.DATA
    if config.MODEL["num_classes"] != len(FINDINGS):
        raise DataError(f"MODEL.num_classes={config.MODEL['num_classes']} but ChestX-ray14 has "
                        f"{len(FINDINGS)} findings: {list(FINDINGS)}")
    image_dir, csv_path = resolve_data_paths(config)
    records = load_records(csv_path, image_dir, FINDINGS, data["on_bad_image"])
    train, val, test = split_records(
        records, (data["train_split"], data["val_split"], data["test_split"]), config.TRAIN["seed"],
        data["train_val_list"] or None, data["test_list"] or None,
    )
    train_tf, eval_tf = build_transform(data, train=True), build_transform(data, train=False)
    return CXRSplits(ChestXray14Dataset(train, train_tf), ChestXray14Dataset(val, eval_tf),
                     ChestXray14Dataset(test, eval_tf))
