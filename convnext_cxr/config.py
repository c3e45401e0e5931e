"""convnext_cxr's settings: the sections of ``config.yaml``, with the shared engine's ``TrainConfig`` as ``train``.

Every entry point reads them with :func:`parse_config` (``--config FILE``, ``--section.key VALUE``,
``--set section.key=VALUE``, ``--help``). The source document's spellings are one alias table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from convnext_cxr.dataset import DataConfig
from convnext_cxr.loss import LossConfig
from convnext_cxr.model import ModelConfig
from shared import EarlyStoppingConfig, TrainConfig, parse_cli

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")

#: The source document's config spellings, accepted in a YAML file and on the command line.
SOURCE_KEY_ALIASES = {
    "learning_rate": "train.lr", "train.learning_rate": "train.lr",
    "num_epochs": "train.epochs", "train.num_epochs": "train.epochs",
    "batch_size": "train.batch_size", "loss_type": "loss.loss_type",
}

TRAIN_DESCRIPTION = ("Train ConvNeXt + attention heads on ChestX-ray14 (14 findings); evaluate the best EMA model "
                     "on validation and test (results/) and export it (export/).")


def _default_train() -> TrainConfig:
    return TrainConfig(output_dir="runs/convnext_cxr",
                       early_stopping=EarlyStoppingConfig(monitor="val/macro_auroc", mode="max", patience=10))


@dataclass
class CXRConfig:
    data: DataConfig = field(default_factory=DataConfig)  # where the X-rays are, splits, augmentation, cache
    model: ModelConfig = field(default_factory=ModelConfig)  # backbone, attention and heads
    loss: LossConfig = field(default_factory=LossConfig)  # the training loss
    train: TrainConfig = field(default_factory=_default_train)  # the shared engine: optimisation, EMA, checkpoints


def parse_config(argv: Sequence[str] | None = None, description: str = TRAIN_DESCRIPTION) -> CXRConfig:
    """config.yaml (or ``--config FILE``) <- command-line overrides, in any spelling of SOURCE_KEY_ALIASES."""
    return parse_cli(CXRConfig, argv, description=description, default_config=DEFAULT_CONFIG,
                     aliases=SOURCE_KEY_ALIASES)
