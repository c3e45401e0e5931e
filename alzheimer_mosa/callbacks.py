"""Engine callbacks: TensorBoard metrics/histograms/figures and the backbone freeze schedule.

Step convention (the engine's, shared by every tag): a training batch logs at the number of
optimizer steps done including its own (so the first batch after a resume from step T logs at T+1),
and epoch-level values log at the epoch's last step. The engine opens the writer with ``purge_step``
= the checkpoint's step + 1, so everything a killed run wrote after its last checkpoint is dropped
and the resumed curves neither jump back nor double.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared import Callback, Engine, MultiClassTask
from alzheimer_mosa.config import LoggingConfig
from alzheimer_mosa.metrics_utils import add_figures_to_tensorboard, compute_metrics, save_figures, scalar_metrics

logger = logging.getLogger(__name__)


class VolumeClassificationTask(MultiClassTask):
    """:class:`shared.MultiClassTask` that keeps the last evaluation's outputs for the figures."""

    last_outputs: dict[str, np.ndarray] | None = None

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        self.last_outputs = outputs
        return super().compute_metrics(outputs)

    def probabilities(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return torch.softmax(torch.from_numpy(outputs["logits"]), dim=1).numpy()


class TensorBoardCallback(Callback):
    """``Train/Batch/*``, ``Train/*``, ``Val/*`` scalars, ``Params/*``/``Grads/*`` histograms and
    validation figures, all through the engine's SummaryWriter."""

    def __init__(self, task: VolumeClassificationTask, logging_cfg: LoggingConfig, figure_dir: Path):
        self.task, self.cfg, self.figure_dir = task, logging_cfg, figure_dir
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._grads: dict[str, torch.Tensor] = {}
        self._hooks: list = []

    def _wants_histograms(self, epoch: int) -> bool:
        return self.cfg.hist_interval > 0 and (epoch + 1) % self.cfg.hist_interval == 0

    def _metrics(self, logits: torch.Tensor, targets: torch.Tensor, quiet: bool) -> dict[str, Any]:
        probs = torch.softmax(logits.float(), dim=1).numpy()
        return compute_metrics(targets.numpy(), probs, self.task.class_names, self.task.positive_class,
                               quiet=quiet)

    def on_epoch_start(self, engine: Engine, epoch: int) -> None:
        self._logits, self._targets = [], []
        if engine.tensorboard is not None and self._wants_histograms(epoch):
            # Gradients are cleared right after each optimizer step, so keep a copy as they arrive;
            # the last batch of the epoch wins.
            model = engine.accelerator.unwrap_model(engine.model)
            for name, param in model.named_parameters():
                if param.requires_grad:
                    self._hooks.append(param.register_post_accumulate_grad_hook(
                        lambda p, name=name: self._grads.__setitem__(name, p.grad.detach().float().cpu())))

    def on_train_batch_end(self, engine: Engine, batch: Any, outputs: dict[str, Any]) -> None:
        acc = engine.accelerator
        logits, targets = acc.gather((outputs["logits"].float(), outputs["targets"]))
        logits, targets = logits.cpu(), targets.cpu()
        self._logits.append(logits)
        self._targets.append(targets)
        if not self.cfg.batch_metrics or not torch.isfinite(logits).all():
            return  # non-finite outputs: the engine's guard stops the run with its message
        loss = acc.reduce(outputs["loss"].detach().float(), "mean")  # a collective: every process calls it
        writer = engine.tensorboard
        if writer is None:
            return
        step = engine.global_step
        writer.add_scalar("Train/Batch/loss", loss.item(), step)
        writer.add_scalar("Train/Batch/lr", engine.optimizer.param_groups[0]["lr"], step)
        for name, value in scalar_metrics(self._metrics(logits, targets, quiet=True)).items():
            writer.add_scalar(f"Train/Batch/{name}", value, step)

    def on_epoch_end(self, engine: Engine, epoch: int, metrics: dict[str, Any]) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        writer = engine.tensorboard
        if writer is None:
            return
        step = engine.global_step
        train = scalar_metrics(self._metrics(torch.cat(self._logits), torch.cat(self._targets), quiet=False))
        train["loss"], train["lr"] = metrics["train/loss"], metrics["train/lr"]
        for name, value in train.items():
            writer.add_scalar(f"Train/{name}", value, step)
        for key, value in scalar_metrics({k[len("val/"):]: v for k, v in metrics.items() if k.startswith("val/")}).items():
            writer.add_scalar(f"Val/{key}", value, step)
        if self.task.last_outputs is not None and "val/confusion_matrix" in metrics:
            outputs = self.task.last_outputs
            figures = save_figures(outputs["targets"], self.task.probabilities(outputs), metrics["val/confusion_matrix"],
                                   self.task.class_names, self.figure_dir, "val")
            add_figures_to_tensorboard(writer, "Val", figures, step)
        if self._wants_histograms(epoch):
            model = engine.accelerator.unwrap_model(engine.model)
            for name, param in model.named_parameters():
                writer.add_histogram(f"Params/{name}", param.detach().float().cpu(), step)
            for name, grad in self._grads.items():
                writer.add_histogram(f"Grads/{name}", grad, step)
            self._grads = {}
        writer.flush()


class BackboneFreezeCallback(Callback):
    """Keep a Mosa model's backbone frozen for the first ``freeze_epochs`` epochs (also after a resume)."""

    def __init__(self, freeze_epochs: int):
        self.freeze_epochs = freeze_epochs

    def on_epoch_start(self, engine: Engine, epoch: int) -> None:
        model = engine.accelerator.unwrap_model(engine.model)
        frozen = epoch < self.freeze_epochs
        if frozen != model.freeze_backbone:
            logger.info("epoch %d: backbone %s", epoch + 1, "frozen" if frozen else "unfrozen")
        model.set_backbone_frozen(frozen)
