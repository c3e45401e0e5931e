"""Attention over the FPN feature maps: CBAM, pooled multi-head self-attention, cross-scale attention.

Every map has the same channel count (the FPN width). Self- and cross-scale attention take their
keys/values from maps average-pooled to at most ``pool_size`` x ``pool_size`` tokens, so the
attention matrix grows linearly with the image area (queries) and never quadratically: at 224 px
the stride-4 map has 3,136 queries against at most 49 (self) or 3 x 49 (cross-scale) keys.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers.cbam import CbamModule


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C]."""
    return x.flatten(2).transpose(1, 2)


def pooled_tokens(x: torch.Tensor, pool_size: int) -> torch.Tensor:
    """Average-pool a [B, C, H, W] map to at most pool_size x pool_size cells -> [B, <=pool_size^2, C]."""
    grid = (min(x.shape[-2], pool_size), min(x.shape[-1], pool_size))
    return to_tokens(F.adaptive_avg_pool2d(x, grid))


class MultiHeadAttention(nn.Module):
    """Multi-head attention of query tokens over context tokens (PyTorch's fused SDPA kernel)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """query [B, Nq, C], context [B, Nk, C] -> [B, Nq, C]."""
        b, nq, c = query.shape
        head_dim = c // self.num_heads
        q = self.q(query).view(b, nq, self.num_heads, head_dim).transpose(1, 2)        # [B, h, Nq, d]
        k, v = self.kv(context).view(b, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)                                 # [B, h, Nq, d]
        return self.proj(out.transpose(1, 2).reshape(b, nq, c))


class PooledSelfAttention(nn.Module):
    """Residual multi-head self-attention on one map, keys/values from its pooled copy (PVT v2 style)."""

    def __init__(self, dim: int, num_heads: int, pool_size: int):
        super().__init__()
        self.pool_size = pool_size
        self.norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> same shape."""
        context = self.norm(pooled_tokens(x, self.pool_size))
        out = self.attn(self.norm(to_tokens(x)), context)
        return x + out.transpose(1, 2).reshape(x.shape)


class CrossScaleAttention(nn.Module):
    """Each scale's tokens query the pooled tokens of all other scales; residual per scale."""

    def __init__(self, dim: int, num_heads: int, num_scales: int, pool_size: int):
        super().__init__()
        self.pool_size = pool_size
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_scales))
        self.attns = nn.ModuleList(MultiHeadAttention(dim, num_heads) for _ in range(num_scales))

    @property
    def max_context_tokens(self) -> int:
        """Upper bound on keys/values per query, whatever the image size."""
        return (len(self.attns) - 1) * self.pool_size ** 2

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        contexts = [norm(pooled_tokens(f, self.pool_size)) for f, norm in zip(features, self.norms)]
        outputs = []
        for i, (x, norm, attn) in enumerate(zip(features, self.norms, self.attns)):
            context = torch.cat([c for j, c in enumerate(contexts) if j != i], dim=1)  # [B, <=max_context_tokens, C]
            out = attn(norm(to_tokens(x)), context)
            outputs.append(x + out.transpose(1, 2).reshape(x.shape))
        return outputs


#: Named settings of (MODEL.use_modern_attention, MODEL.use_cross_scale_attention).
ATTENTION_SETTINGS = {
    "cbam": (False, False),
    "cbam+cross": (False, True),
    "mhsa": (True, False),
    "mhsa+cross": (True, True),
}


class MultiScaleAttention(nn.Module):
    """Per-scale attention (CBAM, or pooled self-attention when ``modern``), then optional cross-scale attention.

    The two switches are independent: ``cross_scale`` adds cross-scale attention on top of either
    per-scale mechanism.
    """

    def __init__(self, dim: int, num_scales: int, modern: bool, cross_scale: bool, num_heads: int, pool_size: int):
        super().__init__()
        self.per_scale = nn.ModuleList(
            PooledSelfAttention(dim, num_heads, pool_size) if modern else CbamModule(dim)
            for _ in range(num_scales)
        )
        self.cross_scale = CrossScaleAttention(dim, num_heads, num_scales, pool_size) if cross_scale else None

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        features = [attend(f) for attend, f in zip(self.per_scale, features)]
        if self.cross_scale is not None:
            features = self.cross_scale(features)
        return features
