"""Select the training loss by name from the shared losses (ASL by default, as in the source recipe)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.nn as nn

from shared.losses import build_loss, pos_weight_from_labels


@dataclass
class LossConfig:
    loss_type: str = "asymmetric_loss"  # asymmetric_loss | focal | weighted_bce | bce
    gamma_neg: float = 4.0  # ASL: focusing exponent of negatives
    gamma_pos: float = 0.0  # ASL: focusing exponent of positives (0 or 1 in the paper)
    clip: float = 0.05  # ASL probability shift of negatives
    focal_alpha: float = 0.25  # focal: weight of the positive term
    focal_gamma: float = 2.0  # focal: focusing exponent


def build_criterion(cfg: LossConfig, train_labels: np.ndarray) -> nn.Module:
    """``weighted_bce`` takes ``pos_weight`` = negatives/positives per finding from the training labels."""
    kwargs = {
        "asymmetric_loss": dict(gamma_neg=cfg.gamma_neg, gamma_pos=cfg.gamma_pos, clip=cfg.clip),
        "focal": dict(alpha=cfg.focal_alpha, gamma=cfg.focal_gamma),
        "weighted_bce": dict(pos_weight=pos_weight_from_labels(train_labels)),
        "bce": {},
    }
    if cfg.loss_type not in kwargs:
        raise ValueError(f"loss.loss_type={cfg.loss_type!r}; choose one of {sorted(kwargs)}")
    return build_loss(cfg.loss_type, **kwargs[cfg.loss_type])
