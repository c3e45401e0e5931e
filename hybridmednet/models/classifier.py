"""Classification heads: multi-label (one independent head per finding) and hierarchical coarse/fine."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn


class HierarchicalOutput(NamedTuple):
    """Logits of the hierarchical head; unpacks like the guide's ``coarse_pred, fine_pred = model(x)``."""

    coarse: torch.Tensor  # [B, num_coarse_classes]
    fine: torch.Tensor    # [B, num_classes]


class DualPoolEmbedding(nn.Module):
    """Global average || global max pooling, then a shared MLP: [B, C, H, W] -> [B, C].

    Average pooling summarises diffuse findings, max pooling keeps small focal ones. ``norm="batch"``
    (BatchNorm1d, as in the original HybridMedNet) trained markedly faster in our runs; ``"layer"``
    makes the output independent of the other images in the batch (exact gradient accumulation,
    training batches of one image).
    """

    def __init__(self, channels: int, dropout: float, norm: str = "batch"):
        super().__init__()
        norms = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}
        if norm not in norms:
            raise ValueError(f"head norm must be one of {sorted(norms)}, got {norm!r}")
        self.mlp = nn.Sequential(
            nn.Linear(2 * channels, channels), norms[norm](channels), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1))


class IndependentHeads(nn.Module):
    """``num_heads`` separate two-layer MLPs with one logit each, evaluated as one batched matmul.

    Equivalent to a ModuleList of Linear(in, hidden) -> ReLU -> Dropout -> Linear(hidden, 1) with no
    weights shared between heads. [B, in_features] -> [B, num_heads].
    """

    def __init__(self, in_features: int, hidden: int, num_heads: int, dropout: float):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_heads, in_features, hidden))
        self.b1 = nn.Parameter(torch.empty(num_heads, hidden))
        self.w2 = nn.Parameter(torch.empty(num_heads, hidden))
        self.b2 = nn.Parameter(torch.empty(num_heads))
        self.dropout = nn.Dropout(dropout)
        # Same uniform(+-1/sqrt(fan_in)) init as nn.Linear, per head.
        for weight, bias, fan_in in ((self.w1, self.b1, in_features), (self.w2, self.b2, hidden)):
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def no_weight_decay(self) -> set[str]:
        return {"b1", "b2"}  # biases, stacked per head (2-D, so timm would not recognise them)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(torch.einsum("bi,kih->bkh", x, self.w1) + self.b1)   # [B, K, hidden]
        return torch.einsum("bkh,kh->bk", self.dropout(hidden), self.w2) + self.b2


class MultiLabelClassifier(nn.Module):
    """Pooled embedding -> one independent head per finding: [B, C, H, W] -> [B, num_classes] logits."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float, norm: str = "batch"):
        super().__init__()
        self.embed = DualPoolEmbedding(in_channels, dropout, norm)
        self.heads = IndependentHeads(in_channels, in_channels // 4, num_classes, dropout / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.embed(x))


class HierarchicalClassifier(nn.Module):
    """Coarse head (finding groups) and fine head (findings) on a shared pooled embedding.

    The fine heads also see the coarse probabilities, so the group decision informs each finding.
    """

    def __init__(self, in_channels: int, num_coarse_classes: int, num_fine_classes: int, dropout: float,
                 norm: str = "batch"):
        super().__init__()
        self.embed = DualPoolEmbedding(in_channels, dropout, norm)
        self.coarse_head = nn.Sequential(
            nn.Linear(in_channels, in_channels // 2), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(in_channels // 2, num_coarse_classes),
        )
        self.fine_heads = IndependentHeads(in_channels + num_coarse_classes, in_channels // 4,
                                           num_fine_classes, dropout / 2)

    def forward(self, x: torch.Tensor) -> HierarchicalOutput:
        embedding = self.embed(x)
        coarse = self.coarse_head(embedding)
        fine = self.fine_heads(torch.cat([embedding, coarse.sigmoid()], dim=1))
        return HierarchicalOutput(coarse, fine)
