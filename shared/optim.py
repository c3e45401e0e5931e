"""The optimizer and learning-rate schedule that :class:`~shared.train_config.TrainConfig` describes (timm)."""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2
from timm.scheduler import PlateauLRScheduler, create_scheduler_v2

from .train_config import TrainConfig


def fused_optimizer_kwargs(opt_name: str, device: torch.device) -> dict:
    """``fused=True`` for Adam/AdamW on CUDA and CPU: one kernel updates every parameter. On CPU, PyTorch
    otherwise loops over the tensors in Python; for 11.5M parameters the step takes 7.5 ms instead of 34 ms."""
    if device.type in ("cuda", "cpu") and opt_name.lower() in ("adam", "adamw"):
        return {"fused": True}
    return {}


def create_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """timm's ``cfg.optimizer`` (no weight decay on norms, biases and ``model.no_weight_decay()``)."""
    return create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               momentum=cfg.momentum, **fused_optimizer_kwargs(cfg.optimizer, device))


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, updates_per_epoch: int):
    """timm's warmup + ``cfg.scheduler`` stepped per optimizer update (plateau: per epoch); None for ``none``."""
    if cfg.scheduler == "none":
        return None
    # Warmup is a prefix and the decay spans the remaining epochs, so the peak lr is reached
    # exactly when warmup ends and min_lr exactly at the last step.
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.scheduler, num_epochs=max(cfg.epochs - cfg.warmup_epochs, 1e-3),
        warmup_prefix=True, decay_epochs=cfg.decay_epochs,
        patience_epochs=int(cfg.decay_epochs), decay_rate=cfg.decay_rate, min_lr=cfg.min_lr,
        warmup_lr=cfg.lr * cfg.warmup_start_factor,
        warmup_epochs=cfg.warmup_epochs, plateau_mode=cfg.early_stopping.mode,
        step_on_epochs=cfg.scheduler == "plateau", updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def resume_scheduler(scheduler, saved_state: dict | None, global_step: int) -> None:
    """Put a resumed run's schedule at ``global_step``.

    The rule: a step-based schedule (cosine, step) is a function of the current config and the step, so it is
    the one :func:`create_scheduler` just built from this run's config, jumped to ``global_step``; the saved
    state is not loaded. With the same config this is exactly the saved schedule; resuming with more
    ``epochs`` (2 -> 4) stretches the cosine over the new length and the lr continues on it from the resumed
    step, instead of staying at ``min_lr`` where the old, shorter schedule ended. The plateau schedule's
    state (its reductions so far) is history, not config, and is restored as saved."""
    if scheduler is None:
        return
    if isinstance(scheduler, PlateauLRScheduler):
        if saved_state:
            scheduler.load_state_dict(saved_state)
        return
    scheduler.step_update(num_updates=global_step)
