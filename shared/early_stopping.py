"""Early stopping and best-metric comparison on the monitored metric (``train.early_stopping.*``)."""
from __future__ import annotations

import math
from typing import Any, Mapping


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
