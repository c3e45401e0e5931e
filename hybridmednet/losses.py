"""The finding loss (with optional pos_weight) and the hierarchical coarse + fine + consistency loss."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared import build_loss, pos_weight_from_labels
from shared.config import ConfigError

from .models.classifier import HierarchicalOutput


def membership_matrix(groups: Mapping[str, Sequence[str]], findings: Sequence[str]) -> torch.Tensor:
    """[num_groups, num_findings] 0/1 matrix; every finding must belong to exactly one group."""
    position = {name: i for i, name in enumerate(findings)}
    matrix = torch.zeros(len(groups), len(findings))
    for g, (group, members) in enumerate(groups.items()):
        unknown = [m for m in members if m not in position]
        if unknown:
            raise ConfigError(f"MODEL.coarse_groups[{group!r}] names unknown findings {unknown}; "
                              f"findings are {list(findings)}")
        matrix[g, [position[m] for m in members]] = 1.0
    counts = matrix.sum(0)
    if (counts != 1).any():
        bad = [findings[i] for i in torch.nonzero(counts != 1).flatten().tolist()]
        raise ConfigError(f"MODEL.coarse_groups must put every finding in exactly one group; check {bad}")
    return matrix


def group_max(values: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """[B, num_findings] values in [0, 1] -> [B, num_groups]: the largest value inside each group.

    On 0/1 labels this is "any finding of the group present"; on probabilities, a lower bound of
    the probability that the group is present.
    """
    return (values[:, None, :] * membership.to(values.device)).amax(dim=-1)


def build_finding_loss(loss_cfg, train_labels: np.ndarray) -> nn.Module:
    """LOSS.type with LOSS.pos_weight ('auto' = negatives/positives per finding on the training labels)."""
    kwargs = {}
    pos_weight = loss_cfg["pos_weight"]
    if pos_weight == "auto":
        kwargs["pos_weight"] = pos_weight_from_labels(train_labels)
    elif pos_weight is not None:
        if len(pos_weight) != train_labels.shape[1]:
            raise ConfigError(f"LOSS.pos_weight has {len(pos_weight)} values for {train_labels.shape[1]} findings")
        kwargs["pos_weight"] = torch.tensor(pos_weight, dtype=torch.float32)
    return build_loss(loss_cfg["type"], **kwargs)  # bce | focal | asl are shared.build_loss names


class HierarchicalLoss(nn.Module):
    """coarse_weight * coarse + fine_weight * fine + consistency_weight * consistency.

    * coarse: BCE of the coarse head against the fine labels grouped into coarse classes
      (a group is positive when any of its findings is);
    * fine: the finding loss of the fine head;
    * consistency: mean squared gap between the coarse head's probabilities and the fine head's
      probabilities grouped the same way, so the two heads cannot contradict each other.
    """

    def __init__(self, finding_loss: nn.Module, membership: torch.Tensor, coarse_weight: float,
                 fine_weight: float, consistency_weight: float):
        super().__init__()
        self.finding_loss = finding_loss
        self.register_buffer("membership", membership)
        self.coarse_weight, self.fine_weight, self.consistency_weight = coarse_weight, fine_weight, consistency_weight

    def forward(self, output: HierarchicalOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        coarse_logits, fine_logits, targets = output.coarse.float(), output.fine.float(), targets.float()
        coarse = F.binary_cross_entropy_with_logits(coarse_logits, group_max(targets, self.membership))
        fine = self.finding_loss(fine_logits, targets)
        consistency = F.mse_loss(coarse_logits.sigmoid(), group_max(fine_logits.sigmoid(), self.membership))
        loss = self.coarse_weight * coarse + self.fine_weight * fine + self.consistency_weight * consistency
        return {"loss": loss, "coarse_loss": coarse.detach(), "fine_loss": fine.detach(),
                "consistency_loss": consistency.detach()}
