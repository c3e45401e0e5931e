"""StarNet dual-pyramid RCF image encoder (the guide author's own design; there is no paper).

Two pyramids run side by side at strides 4 / 8 / 16 / 32:

* local pyramid: StarNet-S1 (timm ``starnet_s1``: stem 32, base width 24, depths [2, 2, 8, 3],
  mlp ratio 4). A star block is dw7x7+BN -> two 1x1 expansions f1, f2 -> act(f1) * f2 ->
  1x1 back + BN -> dw7x7 -> residual with drop path. We reuse timm's implementation, so
  ImageNet weights for this path load when they are available.
* global pyramid: per stage an overlapping strided patch conv (7x7/4 for stage 1, 3x3/2 after,
  as in PVTv2, so its grid always matches the local one), tokens + 2D sin-cos position encoding,
  and one pre-norm transformer block.

Per stage k the two are fused:
    F_k = (1 - w_k) * L_k + w_k * A_k(G_k)
with w_k = sigmoid(per-channel logit, initialised at 0 -> 0.5) and A_k(G) = G + s_k * refine(G)
(refine = dw3x3-BN-GELU-1x1, s_k a per-channel scale initialised at 0, so A_k starts as the
identity). "RCF" = residual cascaded fusion: the next local stage consumes L_k + gamma_k * F_k
with gamma_k (per channel) initialised at 0; the last stage's L_4 + gamma_4 * F_4 is the output
map. At initialisation the encoder therefore computes exactly StarNet-S1, and the global
pyramid is blended in as gamma learns (gamma gets a gradient from the first step).

Attention memory: the stage-1 grid is 56x56 = 3,136 tokens at 224 px, and full attention over
it would need a 3,136^2 matrix per head. Every global block instead uses spatial-reduction
attention with pooled keys/values (PVTv2 "linear SRA"): keys and values come from the token grid
adaptive-average-pooled to at most 7x7 = 49 tokens, so memory is O(N * 49). At stage 4
(7x7 tokens at 224 px) this is ordinary full attention.

Parameter count (independent of image size): 3,545,424 in total, of which 2,676,168 are the
StarNet-S1 local path (without its classifier head) and 869,256 the global pyramid and fusion.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp, build_sincos2d_pos_embed
from timm.models.starnet import StarNet


def starnet_s1_local_pyramid(drop_path_rate: float = 0.0) -> StarNet:
    """Randomly initialised StarNet-S1 without classifier head (the local pyramid)."""
    return StarNet(base_dim=24, depths=[2, 2, 8, 3], mlp_ratio=4, drop_path_rate=drop_path_rate, num_classes=0)


class PooledKVAttention(nn.Module):
    """Multi-head self-attention whose keys/values are pooled to at most ``kv_grid`` x ``kv_grid`` tokens."""

    def __init__(self, dim: int, num_heads: int, kv_grid: int = 7):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.kv_grid = kv_grid
        self.q = nn.Linear(dim, dim)
        self.kv_norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        # x: [B, N, C] with N = H * W tokens in row-major order
        batch, num_tokens, dim = x.shape
        height, width = grid_size
        head_dim = dim // self.num_heads
        q = self.q(x).reshape(batch, num_tokens, self.num_heads, head_dim).transpose(1, 2)  # [B, h, N, d]

        grid = x.transpose(1, 2).reshape(batch, dim, height, width)
        pooled = F.adaptive_avg_pool2d(grid, (min(height, self.kv_grid), min(width, self.kv_grid)))
        pooled = self.kv_norm(pooled.flatten(2).transpose(1, 2))  # [B, M, C], M <= kv_grid^2
        k, v = self.kv(pooled).reshape(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)  # [B, h, M, d]

        out = F.scaled_dot_product_attention(q, k, v)  # [B, h, N, d]
        return self.proj(out.transpose(1, 2).reshape(batch, num_tokens, dim))


class GlobalStage(nn.Module):
    """Strided patch conv -> tokens + 2D sin-cos position encoding -> one pre-norm transformer block."""

    def __init__(self, in_chs: int, dim: int, first: bool, num_heads: int, kv_grid: int, mlp_ratio: float):
        super().__init__()
        # 7x7/4 (pad 3) and 3x3/2 (pad 1) give ceil(H / stride), the same grid as StarNet's convs.
        kernel, stride = (7, 4) if first else (3, 2)
        self.patch_embed = nn.Conv2d(in_chs, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PooledKVAttention(dim, num_heads, kv_grid)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # [B, C, H, W]
        batch, dim, height, width = x.shape
        pos = build_sincos2d_pos_embed([height, width], dim, device=x.device, dtype=x.dtype)  # [H*W, C]
        tokens = x.flatten(2).transpose(1, 2) + pos  # [B, H*W, C]
        tokens = tokens + self.attn(self.norm1(tokens), (height, width))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(batch, dim, height, width)


class GatedFusion(nn.Module):
    """F = (1 - w) * L + w * A(G), then the cascaded residual L + gamma * F (gamma starts at 0)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate_logit = nn.Parameter(torch.zeros(dim, 1, 1))  # w = sigmoid(0) = 0.5
        self.refine = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.BatchNorm2d(dim), nn.GELU(), nn.Conv2d(dim, dim, 1)
        )
        self.refine_scale = nn.Parameter(torch.zeros(dim, 1, 1))  # A(G) = G at initialisation
        self.gamma = nn.Parameter(torch.zeros(dim, 1, 1))  # RCF: local path unchanged at initialisation

    def forward(self, local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.gate_logit)
        aligned = global_ + self.refine_scale * self.refine(global_)
        fused = (1 - w) * local + w * aligned
        return local + self.gamma * fused


class StarNetDualPyramidRCF(nn.Module):
    """Image encoder returning pooled features ``[B, num_features]`` (192 for StarNet-S1)."""

    def __init__(
        self,
        local_pyramid: StarNet | None = None,
        global_heads: tuple[int, ...] = (1, 2, 4, 8),
        kv_grid: int = 7,
        global_mlp_ratio: float = 4.0,
    ):
        super().__init__()
        local_pyramid = local_pyramid if local_pyramid is not None else starnet_s1_local_pyramid()
        dims = [info["num_chs"] for info in local_pyramid.feature_info]
        if len(global_heads) != len(dims):
            raise ValueError(f"global_heads needs one entry per stage ({len(dims)}), got {global_heads}")
        self.stem = local_pyramid.stem
        self.local_stages = local_pyramid.stages
        self.norm = local_pyramid.norm
        in_dims = [3] + dims[:-1]
        self.global_stages = nn.ModuleList(
            GlobalStage(in_dim, dim, i == 0, heads, kv_grid, global_mlp_ratio)
            for i, (in_dim, dim, heads) in enumerate(zip(in_dims, dims, global_heads))
        )
        self.fusions = nn.ModuleList(GatedFusion(dim) for dim in dims)
        self.num_features = dims[-1]
        self.feature_info = local_pyramid.feature_info  # the global pyramid runs at the same strides 4 / 8 / 16 / 32

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        # images: [B, 3, H, W] -> feature map [B, num_features, ceil(H/32), ceil(W/32)]
        local = self.stem(images)
        global_ = images
        for local_stage, global_stage, fusion in zip(self.local_stages, self.global_stages, self.fusions):
            global_ = global_stage(global_)
            local = fusion(local_stage(local), global_)
        return self.norm(local)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images).mean(dim=(2, 3))
