"""MosaShared: the lighter Mosa variant with ONE transformer over the tokens of all scales.

The tokens of the four scales are concatenated into one sequence behind a single cls token, so
attention runs across scales; a learned per-scale embedding tells the shared blocks which scale a
token came from. Fewer parameters than :class:`~alzheimer_mosa.mosa_net.Mosa` (one stack of blocks
instead of four).
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from alzheimer_mosa.mosa_net import (
    SCALE_INDICES,
    MosaBase,
    build_blocks,
    classifier_head,
    init_transformer_weights,
)
from alzheimer_mosa.resnet import ResNet3d, Size3d


class MosaShared(MosaBase):
    def __init__(self, backbone: ResNet3d, input_size: Size3d, num_classes: int, embed_dim: int = 256,
                 depth: int = 2, num_heads: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0):
        super().__init__(backbone, input_size, embed_dim)
        self.scale_embed = nn.Parameter(torch.zeros(len(SCALE_INDICES), embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = build_blocks(embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = classifier_head(embed_dim, embed_dim, num_classes, drop_rate)
        for param in (self.scale_embed, self.cls_token):
            trunc_normal_(param, std=0.02)
        for part in (self.blocks, self.norm, self.head):
            part.apply(init_transformer_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> logits (B, num_classes)."""
        tokens = [t + self.scale_embed[s] for s, t in enumerate(self.scale_tokens(x))]  # (B, N_s, E) each
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        sequence = self.blocks(torch.cat([cls, *tokens], dim=1))  # (B, 1 + sum N_s, E)
        return self.head(self.norm(sequence[:, 0]))
