"""Fixtures: a tiny synthetic NIfTI set and a factory for fast configs (16^3 volumes, ResNet-10, 1 block)."""

import functools
import logging
from pathlib import Path

import pytest
import torch

from alzheimer_mosa.config import Config
from alzheimer_mosa.demo_data import write_demo_dataset
from shared import config_from_dict

CLASSES = ["CN", "AD"]
TINY_SPLITS = {"train": 4, "val": 2, "test": 2}  # volumes per class

TINY_OVERRIDES = {
    "data": {"target_size": [16, 16, 16]},
    "backbone": {"model_type": "resnet10_3d", "width": 8},
    "mosa": {"embed_dim": 16, "depth": 1, "num_heads": 2},
    "train": {"epochs": 2, "lr": 1e-3, "warmup_epochs": 0, "batch_size": 4, "num_workers": 0, "progress_bar": False,
              "mixed_precision": "no"},
    "logging": {"hist_interval": 1},
}


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(2)
    logging.getLogger("alzheimer_mosa").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """root/{train,val,test}/{CN,AD}/demo_*.nii.gz, 20^3 volumes."""
    return write_demo_dataset(tmp_path_factory.mktemp("demo"), CLASSES, TINY_SPLITS, size=20, seed=0)


def _merge(base: dict, update: dict) -> dict:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in update.items():
        if isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def tiny_config(out_dir: Path, data_root: Path, cls=Config, **overrides) -> Config:
    """A tiny ``cls`` config reading ``data_root`` and writing under ``out_dir``; ``overrides`` are
    ``section={key: value}`` mappings."""
    base = _merge(TINY_OVERRIDES, {
        "data": {"data_root": str(data_root), "demo_dir": str(out_dir / "demo")},
        "train": {"output_dir": str(out_dir / "logs")},
        "logging": {"checkpoint_dir": str(out_dir / "checkpoints")},
    })
    return config_from_dict(cls, _merge(base, overrides))


def _export_tiny_mosa(cfg: Config, out_dir: Path):
    """A random-weight (seed 0) Mosa model exported to ``out_dir``; returns (its test dataset, the model's class
    probabilities of each test volume as a numpy array, in dataset order)."""
    from alzheimer_mosa.augment import export_preprocessing
    from alzheimer_mosa.data_loader import build_datasets
    from alzheimer_mosa.model_builder import architecture, build_mosa
    from shared import export_model

    torch.manual_seed(0)
    model = build_mosa(cfg).eval()
    export_model(model, out_dir, project="alzheimer_mosa", architecture=architecture(cfg, "mosa"),
                 class_names=cfg.data.class_names, task="multi-class",
                 preprocessing=export_preprocessing(cfg.data, cfg.backbone.in_channels))
    test_set = build_datasets(cfg)["test"]
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack([test_set[i][0] for i in range(len(test_set))])), 1).numpy()
    return test_set, probs


@pytest.fixture(scope="session")
def export_tiny_mosa():
    """``export_tiny_mosa(cfg, out_dir)`` -> (test dataset, probabilities): a Mosa export and its reference scores."""
    return _export_tiny_mosa


@pytest.fixture(scope="session")
def config_factory():
    """:func:`tiny_config` for module-scoped fixtures."""
    return tiny_config


@pytest.fixture
def make_config(demo_root, tmp_path):
    """``make_config(section={key: value}, ...)`` -> a tiny Config writing into this test's tmp_path."""
    return functools.partial(tiny_config, tmp_path, demo_root)
