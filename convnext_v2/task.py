"""What the engine needs from this project besides the model and data: the classification task, the
choice of the best weights, and the source document's training curves."""

from __future__ import annotations

from typing import Any

from torch import nn

from shared import Engine, MultiClassTask, plot_training_curves

#: The source document's plots: loss, accuracy and learning-rate curves (training_curves.png).
CURVE_KEYS = ["train/loss", "val/loss", "val_ema/loss", "train/accuracy", "val/accuracy", "val_ema/accuracy",
              "train/lr"]


class ClassificationTask(MultiClassTask):
    """Multi-class task that also reports training accuracy (against the dominant label of mixed targets)."""

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, Any]:
        outputs = super().training_step(model, batch)
        targets = outputs["targets"]
        hard_targets = targets.argmax(1) if targets.ndim == 2 else targets
        outputs["accuracy"] = (outputs["logits"].argmax(1) == hard_targets).float().mean()
        return outputs


def plot_curves(engine: Engine) -> None:
    """The source document's loss, accuracy and learning-rate panels as ``<output_dir>/training_curves.png``."""
    if engine.accelerator.is_main_process and engine.history:
        keys = [k for k in CURVE_KEYS if k in engine.history[0]]
        plot_training_curves(engine.history, engine.output_dir / "training_curves.png", keys=keys)


def best_is_ema(engine: Engine) -> bool:
    """True when the best EMA weights validated better than the best raw ones."""
    return engine.ema is not None and engine.early_stopping.is_better(engine.best_ema_metric, engine.best_metric)
