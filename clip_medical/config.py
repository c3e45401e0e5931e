"""The training settings, under the guide's snake_case names (the keys of ``config.json`` and of
each entry of a ``--config-file``), and their translation to the shared engine's ``TrainConfig``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

import torch

from shared import EarlyStoppingConfig, TrainConfig
from clip_medical.models import IMAGE_ENCODERS

# --early-stopping-monitor -> (engine metric key, direction). Accuracy is in percent, as in the
# guide, so "--early-stopping-min-delta 0.1" means 0.1 percentage points.
MONITORS = {"val_acc": ("val/acc", "max"), "val_loss": ("val/loss", "min")}


@dataclass
class ClipTrainConfig:
    data_dir: str = ""
    output_dir: str = ""
    text_template: str | None = None  # e.g. "这是一张{class_name}的医学图像"
    class_texts_file: str | None = None  # JSON {"class": "description"}; wins over the template
    image_encoder_name: str = "starnet_dual_pyramid_rcf"
    text_encoder_name: str = "bert-base-chinese"  # hub name or local directory
    embed_dim: int = 512
    temperature: float = 0.07
    batch_size: int = 32
    epochs: int = 100
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    img_size: int = 224
    augmentation: Literal["none", "minimal", "standard"] = "standard"
    num_workers: int = 4
    gpu_id: int = 0
    use_amp: bool = True
    resume_from: str | None = None
    save_best: bool = True
    use_cv: bool = False
    n_splits: int = 5
    random_state: int = 42
    early_stopping_patience: int | None = None  # None = no early stopping
    early_stopping_min_delta: float = 0.0
    early_stopping_monitor: Literal["val_acc", "val_loss"] = "val_acc"
    # Additions to the guide's options:
    balanced_sampling: bool = False  # sample training images with probability 1 / class size
    pretrained: bool = True  # ImageNet weights for the image encoder when available
    val_fraction: float = 0.2  # held-out share without --use-cv (stratified)

    def validate(self) -> None:
        """Reject values that would fail late or train nonsense, naming the option."""
        checks = [
            (bool(self.data_dir), "--data-dir is required"),
            (bool(self.output_dir), "--output-dir is required"),
            (self.image_encoder_name in IMAGE_ENCODERS,
             f"unknown image encoder {self.image_encoder_name!r}; choose one of {list(IMAGE_ENCODERS)}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2 for a contrastive loss, got {self.batch_size}"),
            (self.learning_rate > 0, f"--learning-rate must be > 0, got {self.learning_rate}"),
            (self.img_size >= 32, f"--img-size must be >= 32, got {self.img_size}"),
            (self.embed_dim >= 1, f"--embed-dim must be >= 1, got {self.embed_dim}"),
            (0.01 <= self.temperature <= 1.0, f"--temperature must lie in [0.01, 1], got {self.temperature}"),
            (self.n_splits >= 2, f"--n-splits must be >= 2, got {self.n_splits}"),
            (self.early_stopping_patience is None or self.early_stopping_patience >= 1,
             f"--early-stopping-patience must be >= 1 (or omitted), got {self.early_stopping_patience}"),
            (self.early_stopping_min_delta >= 0,
             f"--early-stopping-min-delta must be >= 0, got {self.early_stopping_min_delta}"),
            (0 < self.val_fraction < 1, f"val_fraction must lie in (0, 1), got {self.val_fraction}"),
            (self.num_workers >= 0, f"--num-workers must be >= 0, got {self.num_workers}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def engine_config(cfg: ClipTrainConfig, run_dir: str) -> TrainConfig:
    """The shared engine's settings for one training run (one fold with CV)."""
    monitor, mode = MONITORS[cfg.early_stopping_monitor]
    use_cuda_amp = cfg.use_amp and torch.cuda.is_available()
    precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if use_cuda_amp else "no"
    return TrainConfig(
        output_dir=run_dir,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        optimizer="adamw",
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        scheduler="cosine",
        warmup_epochs=min(1.0, cfg.epochs / 10),  # a tenth of training, at most one epoch
        mixed_precision=precision,  # CPU autocast is slow and lossy, so AMP applies on CUDA only
        ema=False,
        early_stopping=EarlyStoppingConfig(
            monitor=monitor, mode=mode, patience=cfg.early_stopping_patience or 0,
            min_delta=cfg.early_stopping_min_delta,
        ),
        seed=cfg.random_state,
        resume=cfg.resume_from is not None,
        resume_checkpoint=cfg.resume_from or "",
        save_best=cfg.save_best,
        progress_bar=sys.stderr.isatty(),  # per-epoch summary lines only when logging to a file
    )
