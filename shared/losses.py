"""Classification losses, each written to match its paper's formula (tests check them directly)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")


class AsymmetricLoss(nn.Module):
    """Asymmetric Loss (Ridnik et al., ICCV 2021) for multi-label classification.

    Negatives get probability shifting ``p_m = max(p - clip, 0)`` and focusing ``gamma_neg``;
    positives get ``gamma_pos``. ``reduction="mean"`` averages the per-sample sum over classes
    (the paper's code returns the batch sum, which ties the learning rate to the batch size).
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                 eps: float = 1e-8, reduction: str = "mean"):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        prob_pos = torch.sigmoid(logits)
        prob_neg = 1.0 - prob_pos
        if self.clip > 0:
            prob_neg = (prob_neg + self.clip).clamp(max=1.0)  # 1 - max(p - clip, 0)
        loss = targets * torch.log(prob_pos.clamp(min=self.eps)) \
            + (1 - targets) * torch.log(prob_neg.clamp(min=self.eps))
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            p_t = prob_pos * targets + prob_neg * (1 - targets)
            gamma = self.gamma_pos * targets + self.gamma_neg * (1 - targets)
            loss = loss * torch.pow(1 - p_t, gamma)
        per_sample = -loss.sum(dim=-1)
        return _reduce(per_sample, self.reduction)


class BinaryFocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017) for multi-label targets: alpha_t (1 - p_t)^gamma BCE."""

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, reduction: str = "mean"):
        super().__init__()
        self.alpha, self.gamma, self.reduction = alpha, gamma, reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        prob = torch.sigmoid(logits)
        p_t = prob * targets + (1 - prob) * (1 - targets)
        loss = bce * (1 - p_t) ** self.gamma
        if self.alpha is not None:
            loss = loss * (self.alpha * targets + (1 - self.alpha) * (1 - targets))
        return _reduce(loss, self.reduction)


class FocalLoss(nn.Module):
    """Softmax focal loss for single-label multi-class targets, with optional per-class alpha."""

    def __init__(self, alpha: Sequence[float] | float | None = None, gamma: float = 2.0,
                 label_smoothing: float = 0.0, reduction: str = "mean"):
        super().__init__()
        if isinstance(alpha, (int, float)):
            alpha = [float(alpha)]
        self.register_buffer("alpha", None if alpha is None else torch.tensor(alpha, dtype=torch.float32))
        self.gamma, self.label_smoothing, self.reduction = gamma, label_smoothing, reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, targets, reduction="none", label_smoothing=self.label_smoothing)
        p_t = torch.softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
        loss = (1 - p_t) ** self.gamma * ce
        if self.alpha is not None:
            if self.alpha.numel() not in (1, logits.shape[1]):
                raise ValueError(f"focal alpha has {self.alpha.numel()} values for {logits.shape[1]} classes")
            alpha = self.alpha if self.alpha.numel() == 1 else self.alpha[targets]
            loss = alpha * loss
        return _reduce(loss, self.reduction)


def pos_weight_from_labels(labels: torch.Tensor | "np.ndarray", max_weight: float = 100.0) -> torch.Tensor:
    """BCE ``pos_weight`` = negatives / positives per class, from the training labels [N, C]."""
    labels = torch.as_tensor(labels, dtype=torch.float32)
    positives = labels.sum(0)
    negatives = labels.shape[0] - positives
    return (negatives / positives.clamp(min=1.0)).clamp(min=1.0, max=max_weight)


LOSSES = {
    "asymmetric_loss": AsymmetricLoss,
    "asl": AsymmetricLoss,
    "focal": BinaryFocalLoss,
    "focal_loss": BinaryFocalLoss,
    "focal_multiclass": FocalLoss,
    "bce": nn.BCEWithLogitsLoss,
    "weighted_bce": nn.BCEWithLogitsLoss,
    "cross_entropy": nn.CrossEntropyLoss,
    "soft_target_ce": SoftTargetCrossEntropy,
}


def build_loss(name: str, **kwargs) -> nn.Module:
    """Loss by name; ``kwargs`` go to its constructor (e.g. ``pos_weight`` for weighted_bce)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    if name == "weighted_bce" and kwargs.get("pos_weight") is None:
        raise ValueError("weighted_bce needs pos_weight (see pos_weight_from_labels)")
    return LOSSES[name](**kwargs)
