"""Mosa: a 3D ResNet whose four stage outputs each feed a small transformer (multi-scale attention).

Every stage map ``(B, C_s, d_s, h_s, w_s)`` is cut into non-overlapping 3D patches by a strided
convolution into ``embed_dim`` tokens on a grid of about 1/16 of the input (stage 4, already at 1/32,
keeps its own grid). Channel counts and grids derive from the backbone and the input size, and the
positional embeddings are resampled when a volume of another size comes in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from alzheimer_mosa.resnet import ResNet3d, Size3d

# Stage maps used as scales (indices into ResNet3d.get_feature_maps: 0 is the stem).
SCALE_INDICES = (1, 2, 3, 4)
SCALE_STRIDES = (4, 8, 16, 32)
# Token grid stride (w.r.t. the input) that the patch embeddings aim for.
TOKEN_STRIDE = 16


class ScaleTokenizer(nn.Module):
    """One scale: strided-conv patch embedding plus a 3D positional embedding on its token grid."""

    def __init__(self, in_channels: int, embed_dim: int, feature_size: Size3d, patch: int):
        super().__init__()
        # A map smaller than the patch is embedded whole along that axis.
        kernel = tuple(min(patch, s) for s in feature_size)
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=kernel, stride=kernel)
        self.grid = tuple(s // k for s, k in zip(feature_size, kernel))
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *self.grid))
        trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """(B, C, d, h, w) -> tokens (B, N, E) with N the number of grid cells."""
        tokens = self.proj(feature_map)  # (B, E, gd, gh, gw)
        pos = self.pos_embed
        if tuple(tokens.shape[2:]) != tuple(pos.shape[2:]):
            pos = F.interpolate(pos, size=tokens.shape[2:], mode="trilinear", align_corners=False)
        return (tokens + pos).flatten(2).transpose(1, 2)


def build_tokenizers(backbone: ResNet3d, input_size: Size3d, embed_dim: int) -> nn.ModuleList:
    """A :class:`ScaleTokenizer` per stage, sized from the backbone's channels and ``input_size``."""
    channels = backbone.feature_channels
    sizes = backbone.feature_map_sizes(input_size)
    return nn.ModuleList(
        ScaleTokenizer(channels[i], embed_dim, sizes[i], max(1, TOKEN_STRIDE // stride))
        for i, stride in zip(SCALE_INDICES, SCALE_STRIDES)
    )


def build_blocks(embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 drop_rate: float, attn_drop_rate: float) -> nn.Sequential:
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
    return nn.Sequential(*[
        Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate,
              attn_drop=attn_drop_rate)
        for _ in range(depth)
    ])


def classifier_head(in_dim: int, hidden_dim: int, num_classes: int, drop_rate: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(drop_rate),
        nn.Linear(hidden_dim, num_classes),
    )


def init_transformer_weights(module: nn.Module) -> None:
    """ViT-style init for the layers Mosa adds (the backbone keeps its own)."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ScaleEncoder(nn.Module):
    """A cls token and a transformer of its own for one scale's tokens."""

    def __init__(self, embed_dim: int, **block_args):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = build_blocks(embed_dim, **block_args)
        self.norm = nn.LayerNorm(embed_dim)
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.cls_pos, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, E) -> cls output (B, E)."""
        cls = (self.cls_token + self.cls_pos).expand(tokens.shape[0], -1, -1)
        x = self.blocks(torch.cat([cls, tokens], dim=1))
        return self.norm(x[:, 0])


class MosaBase(nn.Module):
    """Backbone + per-scale tokenizers shared by both Mosa variants.

    ``freeze_backbone`` runs the backbone without autograd and keeps it in eval mode (BatchNorm
    statistics fixed). Its parameters then get no gradient, so the optimizer leaves them alone; the
    parameters stay registered, which keeps DDP (with ``find_unused_parameters``) consistent when
    the backbone is unfrozen later.
    """

    def __init__(self, backbone: ResNet3d, input_size: Size3d, embed_dim: int):
        super().__init__()
        backbone.fc = nn.Identity()  # the ResNet's own head would get no gradient (and upset DDP)
        self.backbone = backbone
        self.tokenizers = build_tokenizers(backbone, input_size, embed_dim)
        self.freeze_backbone = False

    def train(self, mode: bool = True) -> "MosaBase":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def set_backbone_frozen(self, frozen: bool) -> None:
        self.freeze_backbone = frozen
        self.train(self.training)

    def scale_tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, D, H, W) -> one (B, N_s, E) token sequence per scale."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            maps = self.backbone.get_feature_maps(x)
        return [tokenizer(maps[i]) for i, tokenizer in zip(SCALE_INDICES, self.tokenizers)]


class Mosa(MosaBase):
    """3D ResNet + one transformer per scale; the scales' cls tokens are concatenated for the MLP head."""

    def __init__(self, backbone: ResNet3d, input_size: Size3d, num_classes: int, embed_dim: int = 256,
                 depth: int = 2, num_heads: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0):
        super().__init__(backbone, input_size, embed_dim)
        block_args = dict(depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                          drop_rate=drop_rate, attn_drop_rate=attn_drop_rate)
        self.encoders = nn.ModuleList(ScaleEncoder(embed_dim, **block_args) for _ in SCALE_INDICES)
        self.head = classifier_head(embed_dim * len(SCALE_INDICES), embed_dim, num_classes, drop_rate)
        for part in (self.encoders, self.head):
            part.apply(init_transformer_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> logits (B, num_classes)."""
        cls_per_scale = [encoder(tokens) for encoder, tokens in zip(self.encoders, self.scale_tokens(x))]
        return self.head(torch.cat(cls_per_scale, dim=1))
