"""What a project plugs into the engine: a :class:`Task` (batch -> loss, outputs -> metrics) and
optional :class:`Callback` hooks."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn as nn

if TYPE_CHECKING:
    from .engine import Engine


class Task:
    """What a project tells the engine. Subclass and override the three methods."""

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor | dict[str, Any]:
        """Return the loss, or a dict with ``"loss"`` and anything callbacks want to see."""
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Return per-sample tensors (first dim = batch); they are gathered over processes."""
        raise NotImplementedError

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Turn the whole gathered evaluation set into ``{name: value}``."""
        raise NotImplementedError

    def on_eval_start(self, model: nn.Module) -> None:
        """Hook to precompute something once per evaluation (e.g. class text embeddings)."""

    #: ``multi-label`` (sigmoid per class), ``multi-class`` or ``zero-shot`` (softmax over classes).
    task_type: str = "multi-class"

    #: The classes in output order. The engine writes them into every checkpoint under ``class_names``
    #: and refuses to resume a checkpoint whose classes or class order differ.
    class_names: Sequence[str] | None = None


class Callback:
    """Hooks into the loop; all optional. ``engine`` exposes accelerator, model, ema, global_step."""

    def on_fit_start(self, engine: "Engine") -> None: ...
    def on_epoch_start(self, engine: "Engine", epoch: int) -> None: ...
    def on_train_batch_end(self, engine: "Engine", batch: Any, outputs: dict[str, Any]) -> None: ...
    def on_epoch_end(self, engine: "Engine", epoch: int, metrics: dict[str, Any]) -> None: ...
