"""How the shared Engine trains and evaluates HybridMedNet (flat or hierarchical head)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from shared import Task, multilabel_metrics

from .losses import HierarchicalLoss, group_max
from .models.classifier import HierarchicalOutput


class HybridMedNetTask(Task):
    """Batches are (images [B, 3, H, W], 0/1 targets [B, num_findings]).

    Flat head: the finding loss. Hierarchical head: :class:`HierarchicalLoss`, and the evaluation
    also reports the coarse head's metrics under ``coarse/``. Loss modules follow the logits'
    device, so a pos_weight buffer never sits on the wrong device.
    """

    task_type = "multi-label"

    def __init__(self, finding_loss: nn.Module, findings: Sequence[str],
                 hierarchy: HierarchicalLoss | None = None, group_names: Sequence[str] = ()):
        self.finding_loss, self.class_names = finding_loss, list(findings)
        self.hierarchy, self.group_names = hierarchy, list(group_names)

    def _loss(self, output: torch.Tensor | HierarchicalOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.hierarchy is None:
            return {"loss": self.finding_loss.to(targets.device)(output.float(), targets.float())}
        return self.hierarchy.to(targets.device)(output, targets)

    def training_step(self, model, batch):
        images, targets = batch
        return self._loss(model(images), targets)

    def eval_step(self, model, batch):
        images, targets = batch
        output = model(images)
        if self.hierarchy is None:
            return {"logits": output.float(), "targets": targets}
        return {"logits": output.fine.float(), "coarse_logits": output.coarse.float(), "targets": targets}

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        logits, targets = torch.from_numpy(outputs["logits"]), torch.from_numpy(outputs["targets"]).float()
        metrics = multilabel_metrics(outputs["targets"], logits.sigmoid().numpy(), self.class_names)
        if self.hierarchy is None:
            metrics["loss"] = float(self._loss(logits, targets)["loss"])
            return metrics
        coarse_logits = torch.from_numpy(outputs["coarse_logits"])
        losses = self._loss(HierarchicalOutput(coarse_logits, logits), targets)
        metrics.update({k: float(v) for k, v in losses.items()})
        coarse_targets = group_max(targets, self.hierarchy.membership).numpy()
        coarse = multilabel_metrics(coarse_targets, coarse_logits.sigmoid().numpy(), self.group_names)
        metrics.update({f"coarse/{k}": v for k, v in coarse.items()})
        return metrics
