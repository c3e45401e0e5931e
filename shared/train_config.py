"""The engine's settings: :class:`TrainConfig` and its :class:`EarlyStoppingConfig`.

Every field carries a one-line ``# comment``; ``shared.cli`` builds ``--help`` from those comments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .config import ConfigError

#: The values ``TrainConfig.mixed_precision`` accepts (resolved by ``shared.accelerator.resolve_mixed_precision``).
MIXED_PRECISION_CHOICES = ("bf16", "fp16", "no", "auto")


@dataclass
class EarlyStoppingConfig:
    """Which metric decides the best checkpoint and when training stops early."""

    monitor: str = "val/loss"  # any logged key, e.g. "val/macro_auroc" or "val_ema/accuracy"
    mode: str = "min"  # "max" when larger is better
    patience: int = 0  # epochs without improvement before stopping; 0 = never stop early
    min_delta: float = 0.0  # an improvement must exceed this to reset the patience counter


@dataclass
class TrainConfig:
    """How the shared engine trains: optimisation, schedule, precision, EMA, checkpoints and logging."""

    output_dir: str = "runs/default"  # folder for checkpoints/, logs/, history.json and config.yaml
    epochs: int = 10  # number of training epochs
    batch_size: int = 32  # global batch, split over processes and accumulation steps
    eval_batch_size: int = 0  # 0 = batch_size
    num_workers: int = 4  # DataLoader worker processes per training process; 0 = load in the main process
    optimizer: str = "adamw"  # any timm optimizer name: adamw, adam, sgd, lamb, ...
    lr: float = 1e-4  # peak learning rate, reached when warmup ends
    min_lr: float = 1e-6  # learning rate at the end of the cosine decay (the floor of step/plateau)
    weight_decay: float = 0.05  # never applied to norms, biases or model.no_weight_decay() params
    momentum: float = 0.9  # sgd only
    scheduler: Literal["cosine", "step", "plateau", "none"] = "cosine"  # stepped every optimizer update (plateau: each epoch)
    warmup_epochs: float = 1.0  # linear warmup length in epochs (fractions allowed), stepped per update
    warmup_start_factor: float = 0.01  # warmup starts at lr * this, never at 0
    decay_epochs: float = 30.0  # step scheduler interval; plateau patience
    decay_rate: float = 0.1  # lr factor of each step-scheduler decay or plateau reduction
    grad_accum_steps: int = 1  # batches whose gradients are summed into one optimizer step
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    mixed_precision: str | bool = "auto"  # auto (GPU: bf16, or fp16 without bf16; CPU: fp32) | bf16 | fp16 | no; true = auto, false = no
    cpu: bool = False  # True: train on the CPU even when a GPU is visible
    ema: bool = True  # keep an EMA of the weights (timm ModelEmaV3), evaluated as val_ema/*
    ema_decay: float = 0.9998  # EMA decay per optimizer step
    ema_warmup: bool = False  # timm's decay warmup for short runs
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)  # see early_stopping.*
    seed: int = 42  # seeds Python, NumPy and torch, and the data order
    resume: bool = False  # continue from resume_checkpoint: weights, optimizer, schedule, RNG and history
    resume_checkpoint: str = ""  # default: <output_dir>/checkpoints/checkpoint_latest.pth
    overwrite: bool = False  # True: start afresh where a run is (deleting its checkpoints, history, TensorBoard events)
    save_every: int = 1  # epochs between checkpoint_latest writes (the last epoch is always saved)
    save_every_steps: int = 0  # > 0: also save checkpoint_latest every N optimizer steps (resumed mid-epoch); 0 = off
    save_best: bool = True  # False: still track the best metric, but write no checkpoint_best*.pth
    channels_last: str = "auto"  # auto (= on CUDA) | true | false
    compile: bool = False  # torch.compile through Accelerate's dynamo plugin
    log_every: int = 20  # optimizer steps between train-loss logs and non-finite checks
    limit_train_batches: int = 0  # > 0: stop each epoch after this many batches (smoke tests)
    progress_bar: bool = True  # show a tqdm progress bar per epoch on the main process
    find_unused_parameters: bool = False  # DDP option for models with conditionally used branches
    tracker: Literal["tensorboard", "none"] = "tensorboard"  # where scalars are logged
    log_scalars: bool = True  # False: the engine logs no scalars itself (callbacks log via engine.tensorboard)
    skip_preflight: bool = False  # True: do not open every file of every split before training (the split and class counts are still checked)
    full_best_checkpoint: bool = False  # True: checkpoint_best also holds the resume state, like checkpoint_latest


def validate_train_config(cfg: TrainConfig, prefix: str = "train.") -> None:
    """Refuse values that would fail late or train nonsense (negative epochs "trained" and reported untrained
    weights), naming the key."""
    es = cfg.early_stopping
    checks = [
        ("epochs", cfg.epochs >= 1, ">= 1"), ("batch_size", cfg.batch_size >= 1, ">= 1"),
        ("eval_batch_size", cfg.eval_batch_size >= 0, ">= 0 (0 = batch_size)"),
        ("num_workers", cfg.num_workers >= 0, ">= 0"), ("lr", cfg.lr >= 0, ">= 0"), ("min_lr", cfg.min_lr >= 0, ">= 0"),
        ("weight_decay", cfg.weight_decay >= 0, ">= 0"), ("warmup_epochs", cfg.warmup_epochs >= 0, ">= 0"),
        ("grad_accum_steps", cfg.grad_accum_steps >= 1, ">= 1"), ("grad_clip", cfg.grad_clip >= 0, ">= 0 (0 = off)"),
        ("ema_decay", 0 < cfg.ema_decay < 1, "in (0, 1)"), ("save_every", cfg.save_every >= 1, ">= 1"),
        ("save_every_steps", cfg.save_every_steps >= 0, ">= 0 (0 = off)"), ("log_every", cfg.log_every >= 1, ">= 1"),
        ("early_stopping.mode", es.mode in ("max", "min"), "'max' or 'min'"),
        ("early_stopping.patience", es.patience >= 0, ">= 0 (0 = never stop early)"),
    ]
    for key, ok, rule in checks:
        if not ok:
            value = getattr(es, key.split(".")[1]) if key.startswith("early_stopping.") else getattr(cfg, key)
            raise ConfigError(f"{prefix}{key} must be {rule}, got {value!r}")
