"""Fixtures: small HybridMedNet configs and a tiny multi-label dataset (CPU-sized, a few seconds each)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from hybridmednet.configs.default_config import SOURCE_ALIASES, Config
from hybridmednet.models.backbones import BACKBONES, BackboneSpec, TimmFeatures
from shared import config_from_dict
from shared.config import apply_aliases

TINY_BACKBONE = "test_convnext"  # timm's 0.2M-parameter ConvNeXt for unit tests (LayerNorm only, no BatchNorm)


@pytest.fixture(autouse=True)
def _deterministic_with_tiny_backbone(monkeypatch):
    """Seed every test, register timm's tiny test ConvNeXt and use one CPU thread (all undone afterwards).

    One thread: these tensors are tiny, and on a shared CPU OpenMP threads waiting for each other
    made the suite several times slower than running single-threaded.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    monkeypatch.setitem(BACKBONES, TINY_BACKBONE, BackboneSpec(TimmFeatures, {"model_name": TINY_BACKBONE}))
    yield
    torch.set_num_threads(threads)


def _merged(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def make_config(tmp_path):
    """Factory: narrow heads, no pretrained weights, fp32, no warmup/EMA/TensorBoard, run folder in tmp.

    Sections as keyword arguments, in the guide's spellings (``TRAIN={"learning_rate": 1e-3}``) or the
    canonical ones (``train={"lr": 1e-3}``), resolved by the project's alias table like a YAML file.
    """

    def make(backbone: str = TINY_BACKBONE, **sections) -> Config:
        values = {
            "MODEL": {"backbone": backbone, "pretrained": False, "fpn_channels": 32, "fusion_channels": 64,
                      "num_heads": 4, "attention_pool_size": 4, "dropout": 0.0},
            "DATA": {"image_size": 32},
            "train": {"epochs": 1, "batch_size": 8, "mixed_precision": "no", "warmup_epochs": 0.0, "grad_clip": 0.0,
                      "early_stopping": {"patience": 0}, "num_workers": 0, "tracker": "none",
                      "output_dir": str(tmp_path / "run")},
        }
        return config_from_dict(Config, _merged(values, apply_aliases(sections, SOURCE_ALIASES)))

    return make


@pytest.fixture
def tiny_dataset():
    """8 random 32 px images; finding 0 is positive in 1 of 8 images, finding 1 in half of them."""
    images = torch.randn(8, 3, 32, 32)
    labels = torch.zeros(8, 14)
    labels[0, 0] = 1
    labels[::2, 1] = 1
    labels[1::3, 4] = 1
    return TensorDataset(images, labels)
