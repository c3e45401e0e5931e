"""Ready-made tasks for the two common problem types, so projects do not re-write them."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from .engine import Task
from .metrics import multiclass_metrics, multilabel_metrics


def _logits(output: Any) -> torch.Tensor:
    """Models may return logits or a dict holding them under ``"logits"``."""
    return output["logits"] if isinstance(output, dict) else output


class MultiLabelTask(Task):
    """Batch = (images, 0/1 targets [B, C]); sigmoid probabilities; AUROC/AP/F1 metrics.

    ``input_transform`` runs on the batch's device before the model (e.g. :class:`~shared.data.ImageNormalize`
    for loaders that deliver uint8 images).
    """

    task_type = "multi-label"

    def __init__(self, loss_fn: nn.Module, class_names: Sequence[str], input_transform: nn.Module | None = None):
        self.loss_fn, self.class_names = loss_fn, list(class_names)
        self.input_transform = input_transform or nn.Identity()

    def training_step(self, model, batch):
        images, targets = batch
        logits = _logits(model(self.input_transform(images)))
        return self.loss_fn.to(logits.device)(logits, targets)  # loss buffers (pos_weight) follow the model

    def eval_step(self, model, batch):
        images, targets = batch
        return {"logits": _logits(model(self.input_transform(images))).float(), "targets": targets}

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        logits, targets = torch.from_numpy(outputs["logits"]), torch.from_numpy(outputs["targets"])
        metrics = multilabel_metrics(outputs["targets"], torch.sigmoid(logits).numpy(), self.class_names)
        metrics["loss"] = float(self.loss_fn(logits, targets.to(logits.dtype)))
        return metrics


class MultiClassTask(Task):
    """Batch = (inputs, class index [B]); softmax probabilities; accuracy/F1/AUC metrics.

    ``train_loss_fn`` may differ from the evaluation loss (e.g. soft-target CE under MixUp).
    """

    task_type = "multi-class"

    def __init__(self, loss_fn: nn.Module, class_names: Sequence[str], positive_class: int | None = None,
                 train_loss_fn: nn.Module | None = None, batch_transform=None):
        self.loss_fn, self.class_names, self.positive_class = loss_fn, list(class_names), positive_class
        self.train_loss_fn = train_loss_fn or loss_fn
        self.batch_transform = batch_transform  # e.g. MixUp/CutMix on (inputs, targets)

    def training_step(self, model, batch):
        inputs, targets = batch
        if self.batch_transform is not None:
            inputs, targets = self.batch_transform(inputs, targets)
        logits = _logits(model(inputs))
        loss = self.train_loss_fn.to(logits.device)(logits.float(), targets)  # loss buffers (alpha) follow the model
        return {"loss": loss, "logits": logits.detach(), "targets": targets}

    def eval_step(self, model, batch):
        inputs, targets = batch
        return {"logits": _logits(model(inputs)).float(), "targets": targets}

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        logits, targets = torch.from_numpy(outputs["logits"]), torch.from_numpy(outputs["targets"]).long()
        metrics = multiclass_metrics(outputs["targets"], torch.softmax(logits, 1).numpy(), self.class_names,
                                     self.positive_class)
        metrics["loss"] = float(self.loss_fn(logits, targets))
        return metrics
