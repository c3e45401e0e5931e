"""ChestX-ray14 datasets for training, from the config's data section (the parsing lives in shared.cxr14)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.cxr14 import FINDINGS, ChestXray14Dataset, CXRRecords, load_records, make_synthetic_cxr, split_records
from shared.data import DataError, build_image_transform


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
        demo_dir = Path(output_dir) / "demo_data"
        csv_path = demo_dir / "Data_Entry_2017.csv"
        if not csv_path.is_file():
            make_synthetic_cxr(demo_dir, num_images=cfg.demo_num_images, size=max(64, cfg.image_size), seed=seed,
                               findings=cfg.findings)
        return demo_dir / "images", csv_path
    image_dir, csv_path = Path(cfg.image_dir), Path(cfg.labels_csv)
    if not image_dir.is_dir() or not csv_path.is_file():
        raise DataError(f"ChestX-ray14 data not found (data.image_dir={image_dir}, data.labels_csv={csv_path}). "
                        "Point these at your copy, or run the synthetic demo with --data.demo true (make demo).")
    return image_dir, csv_path


def build_datasets(cfg: DataConfig, output_dir: str | Path, seed: int = 42) -> CXRSplits:
    """Patient-level train/val/test datasets. Under several processes call it inside
    ``PartialState().main_process_first()`` so only one process writes the demo set."""
    image_dir, csv_path = resolve_data_paths(cfg, output_dir, seed)
    records: CXRRecords = load_records(csv_path, image_dir, cfg.findings, cfg.on_bad_image)
    train, val, test = split_records(records, cfg.split_fractions, seed, cfg.train_val_list or None,
                                     cfg.test_list or None)
    train_tf = build_image_transform(cfg.image_size, train=True, augmentation=cfg.augmentation, hflip=False)
    eval_tf = build_image_transform(cfg.image_size, train=False)
    return CXRSplits(ChestXray14Dataset(train, train_tf), ChestXray14Dataset(val, eval_tf),
                     ChestXray14Dataset(test, eval_tf), list(cfg.findings))
