"""The guide's Config: its keys and defaults, dict-style access, strict keys, YAML and --set overrides."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybridmednet.configs.default_config import DEFAULT_COARSE_GROUPS, Config
from shared import ConfigError
from shared.cxr14 import FINDINGS

PROJECT_DIR = Path(__file__).resolve().parents[1]


def test_guide_keys_and_defaults():
    config = Config()
    assert config.MODEL["backbone"] == "convnext_base" and config.MODEL["num_classes"] == 14
    assert config.MODEL["num_heads"] == 8 and config.MODEL["use_modern_attention"] is True
    assert config.train.scheduler == "cosine" and config.train.grad_accum_steps == 1
    assert (config.train.epochs, config.train.lr, config.train.warmup_epochs, config.train.ema) == (50, 1e-4, 5.0, False)
    assert config.train.output_dir == "runs/hybridmednet"
    assert config.LOSS["coarse_weight"] == 0.4 and config.LOSS["pos_weight"] is None
    for section, keys in {
        "MODEL": ["pretrained", "num_coarse_classes", "hierarchical", "use_cross_scale_attention", "fpn_channels",
                  "fusion_channels", "dropout"],
        "DATA": ["data_dir", "labels_file", "image_size", "train_split", "val_split", "test_split",
                 "use_albumentations"],
        "LOSS": ["type", "pos_weight", "fine_weight", "consistency_weight"],
    }.items():
        assert set(keys) <= set(getattr(config, section)), section


def test_guide_train_keys_are_the_shared_train_section(tmp_path):
    """The guide's ``TRAIN = {...}`` and ``DATA = {'num_workers': ...}`` keys, as a YAML file and as flags."""
    path = tmp_path / "guide.yaml"
    path.write_text("TRAIN:\n  batch_size: 16\n  epochs: 3\n  learning_rate: 1.0e-3\n  weight_decay: 0.01\n"
                    "  warmup_epochs: 2\n  early_stopping_patience: 4\n  gradient_accumulation_steps: 2\n"
                    "  lr_scheduler: step\n  mixed_precision: fp16\nDATA:\n  num_workers: 2\n")
    train = Config.load(path).train
    assert (train.batch_size, train.epochs, train.lr, train.weight_decay, train.warmup_epochs) == (16, 3, 1e-3, 0.01, 2)
    assert (train.early_stopping.patience, train.grad_accum_steps, train.scheduler, train.mixed_precision,
            train.num_workers) == (4, 2, "step", "fp16", 2)
    flags = Config.load(argv=["--TRAIN.learning_rate", "5e-4", "--TRAIN.gradient_accumulation_steps", "3",
                              "--DATA.num_workers", "0"]).train
    assert (flags.lr, flags.grad_accum_steps, flags.num_workers) == (5e-4, 3, 0)


def test_default_coarse_groups_partition_the_findings():
    members = [m for group in DEFAULT_COARSE_GROUPS.values() for m in group]
    assert sorted(members) == sorted(FINDINGS) and len(DEFAULT_COARSE_GROUPS) == Config().MODEL["num_coarse_classes"]


def test_unknown_keys_are_errors_everywhere():
    config = Config()
    with pytest.raises(KeyError, match="valid keys: .*backbone"):
        config.MODEL["backbon"] = "swin_tiny"
    with pytest.raises(AttributeError):
        config.DATA.image_sise = 64  # attribute typos cannot create new settings either
    with pytest.raises(ConfigError, match="MODEL.backbon"):
        Config.load(argv=["--set", "MODEL.backbon=swin_tiny"])


def test_instances_do_not_share_mutable_defaults():
    first, second = Config(), Config()
    first.MODEL["coarse_groups"]["pleural"].append("Hernia")
    assert "Hernia" not in second.MODEL["coarse_groups"]["pleural"]


def test_yaml_then_command_line_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("MODEL:\n  backbone: swin_tiny\n  num_heads: 4\nTRAIN:\n  epochs: 3\nLOSS:\n  pos_weight: auto\n")
    config = Config.load(path, ["--set", "TRAIN.epochs=7", "--MODEL.use_modern_attention", "false"])
    assert config.MODEL["backbone"] == "swin_tiny" and config.MODEL["num_heads"] == 4
    assert config.train.epochs == 7 and config.MODEL["use_modern_attention"] is False
    assert config.LOSS["pos_weight"] == "auto" and config.MODEL["fpn_channels"] == 256
    assert Config.load(argv=["--set", "LOSS.pos_weight=[2, 3]"]).LOSS["pos_weight"] == [2.0, 3.0]


@pytest.mark.parametrize("override,message", [
    ("TRAIN.epochs=many", "train.epochs"),
    ("LOSS.pos_weight=sometimes", "pos_weight"),
    ("DATA.train_split=0.9", "must be 1"),
    ("MODEL.num_coarse_classes=4", "defines 3 groups"),
    ("MODEL.num_heads=7", "divisible"),
])
def test_bad_values_are_reported_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        Config.load(argv=["--set", override])


def test_pos_weight_requires_bce():
    with pytest.raises(ConfigError, match="bce loss only"):
        Config.load(argv=["--set", "LOSS.type=focal", "--set", "LOSS.pos_weight=auto"])


def test_guide_snippet_runs_from_inside_the_project_folder():
    """``from configs.default_config import Config; from models.hybrid_med_net import HybridMedNet``."""
    snippet = (
        "import torch\n"
        "from configs.default_config import Config\n"
        "from models.hybrid_med_net import HybridMedNet\n"
        "config = Config()\n"
        "config.MODEL['backbone'] = 'resnet34'\n"
        "config.MODEL['pretrained'] = False\n"
        "model = HybridMedNet(config)\n"
        "print(tuple(model(torch.randn(2, 3, 224, 224)).shape))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", snippet], cwd=PROJECT_DIR, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 14)"
