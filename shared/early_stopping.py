"""Early stopping and best-metric comparison on the monitored metric (``train.early_stopping.*``)."""
from __future__ import annotations

import difflib
import math
import warnings
from typing import Any, Mapping

import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader, Subset

from .config import ConfigError
from .resume import rng_state, set_rng_state


class EarlyStopping:
    """Stop after ``patience`` epochs in which the metric did not improve by more than ``min_delta``."""

    def __init__(self, mode: str = "max", patience: int = 0, min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError(f"early stopping mode must be 'max' or 'min', got {mode!r}")
        self.mode, self.patience, self.min_delta = mode, patience, min_delta
        self.best: float | None = None
        self.num_bad_epochs = 0

    def is_better(self, value: float, reference: float | None, min_delta: float = 0.0) -> bool:
        if value is None or math.isnan(value):
            return False
        if reference is None:
            return True
        return value > reference + min_delta if self.mode == "max" else value < reference - min_delta

    def step(self, value: float) -> bool:
        """Record one epoch's metric; True when it counts as an improvement."""
        if self.is_better(value, self.best, self.min_delta):
            self.best, self.num_bad_epochs = float(value), 0
            return True
        self.num_bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.num_bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs}

    def load_state_dict(self, state: Mapping) -> None:
        self.best, self.num_bad_epochs = state["best"], int(state["num_bad_epochs"])


def monitor_value(metrics: Mapping[str, Any], key: str) -> float:
    """The monitored metric of one epoch, or a KeyError that lists the metrics that were logged."""
    if key not in metrics:
        raise KeyError(f"early_stopping.monitor={key!r} is not among the logged metrics "
                       f"{sorted(k for k in metrics if isinstance(metrics[k], (int, float)))}")
    return float(metrics[key])


def check_monitor(engine) -> None:
    """Before the first step: refuse an ``early_stopping.monitor`` that no epoch will log (a typo used to fail
    after a whole epoch). The task's metrics on a few validation samples say which ``val/*`` keys exist."""
    key = engine.cfg.early_stopping.monitor
    if engine.val_loader is None or key.startswith("train/"):  # train/* keys come from the training step
        return
    dataset = engine.val_loader.dataset
    probe = DataLoader(Subset(dataset, range(min(len(dataset), 8))), batch_size=8, collate_fn=engine.collate_fn,
                       generator=torch.Generator().manual_seed(0))
    rng = rng_state()  # the probe must not move the run's random streams
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a handful of samples leaves some metrics undefined
        outputs = engine.predict(send_to_device(batch, engine.accelerator.device) for batch in probe)
        names = list(engine.task.compute_metrics(outputs))
    set_rng_state(rng)
    logged = [f"val/{n}" for n in names] + ([f"val_ema/{n}" for n in names] if engine.ema is not None else [])
    if key not in logged:
        close = difflib.get_close_matches(key, logged, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"train.early_stopping.monitor={key!r} is not a metric this run logs; {hint}"
                          f"choose one of {sorted(logged)} or train/loss")
