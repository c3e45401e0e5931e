"""ConvNeXt (any timm backbone) + spatial attention + label-correlation attention + decoupled heads.

Data flow for a batch of B images and L findings::

    image (B, 3, H, W)
      -> backbone last feature map            (B, C, h, w)
      -> spatial attention: map a             (B, 1, h, w), features * a
      -> tokens                               (B, h*w, D)
      -> label correlation: L label queries cross-attend over the h*w tokens (each label gets its
         own softmax over positions), then self-attend to each other       (B, L, D)
      -> L decoupled heads, one per finding   (B, L) logits

The source design attended from labels to a single pooled vector; a softmax over one key is
always 1, so its "attention" did nothing. Here the labels attend over spatial tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import timm
import torch
import torch.nn as nn

from shared import config_from_dict, config_to_dict, register_model


@dataclass
class ModelConfig:
    backbone: str = "convnext_large"  # any timm model name
    pretrained: bool = True  # ImageNet weights from the hub (or timm's local cache)
    drop_path_rate: float = 0.2  # stochastic depth of the backbone
    embed_dim: int = 512  # width of the label-correlation module
    num_heads: int = 8  # attention heads of the label-correlation module (must divide embed_dim)
    head_hidden_dim: int = 256  # hidden width of each finding's head
    dropout: float = 0.2  # in the label-correlation module and the heads
    backbone_kwargs: dict = field(default_factory=dict)  # extra timm arguments, e.g. {img_size: 512} for ViTs


class SpatialAttention(nn.Module):
    """Per-position weights from channel-wise mean and max (CBAM's spatial branch), kept for heatmaps."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)  # (B, 2, h, w)
        attention = torch.sigmoid(self.conv(pooled))  # (B, 1, h, w)
        return x * attention, attention


class LabelCorrelation(nn.Module):
    """Learned label embeddings query the image tokens, then exchange information with each other."""

    def __init__(self, num_labels: int, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.label_embed = nn.Parameter(torch.randn(num_labels, dim) * 0.02)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_tokens = nn.LayerNorm(dim)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_self = nn.LayerNorm(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * 2, dim))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, N, D) -> label features (B, L, D) and cross-attention (B, L, N), rows summing to 1."""
        queries = self.label_embed.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, L, D)
        memory = self.norm_tokens(tokens)
        attended, attention = self.cross_attn(self.norm_cross(queries), memory, memory,
                                              need_weights=True, average_attn_weights=True)
        labels = queries + attended
        normed = self.norm_self(labels)
        labels = labels + self.self_attn(normed, normed, normed, need_weights=False)[0]
        labels = labels + self.mlp(self.norm_mlp(labels))
        return labels, attention


class DecoupledHeads(nn.Module):
    """One independent head per finding: LayerNorm -> Dropout -> Linear -> GELU -> Dropout -> Linear(1)."""

    def __init__(self, num_labels: int, dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Dropout(dropout), nn.Linear(dim, hidden_dim), nn.GELU(),
                          nn.Dropout(dropout), nn.Linear(hidden_dim, 1))
            for _ in range(num_labels)
        )

    def forward(self, label_features: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L): head i reads only label i's feature."""
        return torch.cat([head(label_features[:, i]) for i, head in enumerate(self.heads)], dim=1)


class CXRClassifier(nn.Module):
    """Multi-label chest X-ray classifier; ``forward(x)`` gives (B, num_labels) logits."""

    def __init__(self, cfg: ModelConfig, num_labels: int = 14):
        super().__init__()
        self.backbone = timm.create_model(cfg.backbone, pretrained=cfg.pretrained, num_classes=0,
                                          drop_path_rate=cfg.drop_path_rate, **cfg.backbone_kwargs)
        # Keep only what produces the last feature map (drops the classifier head's parameters).
        self.backbone.prune_intermediate_layers(indices=1, prune_head=True)
        channels = self.backbone.feature_info[-1]["num_chs"]
        self.spatial_attention = SpatialAttention()
        self.token_proj = nn.Linear(channels, cfg.embed_dim)
        self.global_proj = nn.Linear(channels, cfg.embed_dim)
        self.label_correlation = LabelCorrelation(num_labels, cfg.embed_dim, cfg.num_heads, cfg.dropout)
        self.heads = DecoupledHeads(num_labels, cfg.embed_dim, cfg.head_hidden_dim, cfg.dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> last backbone feature map (B, C, h, w), for CNNs and transformers alike."""
        return self.backbone.forward_intermediates(x, indices=1, intermediates_only=True)[-1]

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        features, spatial = self.spatial_attention(self.features(x))  # (B, C, h, w), (B, 1, h, w)
        tokens = self.token_proj(features.flatten(2).transpose(1, 2))  # (B, C, h*w) -> (B, h*w, D)
        label_features, label_attention = self.label_correlation(tokens)  # (B, L, D), (B, L, h*w)
        pooled = features.sum((2, 3)) / spatial.sum((2, 3)).clamp(min=1e-6)  # attention-weighted mean, (B, C)
        logits = self.heads(label_features + self.global_proj(pooled).unsqueeze(1))  # (B, L)
        if return_attention:
            return {"logits": logits, "spatial_attention": spatial, "label_attention": label_attention}
        return logits


def build_model(cfg: ModelConfig, num_labels: int = 14) -> CXRClassifier:
    return CXRClassifier(cfg, num_labels)


def export_architecture(cfg: ModelConfig, num_labels: int) -> dict[str, Any]:
    """What an export records to rebuild the model: the model section and the number of findings."""
    return {**config_to_dict(cfg), "num_labels": num_labels}


@register_model("convnext_cxr")
def build_exported(architecture: Mapping[str, Any]) -> CXRClassifier:
    """The classifier of :func:`export_architecture`, without downloading weights (the export holds them)."""
    values = dict(architecture)
    num_labels = int(values.pop("num_labels"))
    return CXRClassifier(config_from_dict(ModelConfig, {**values, "pretrained": False}), num_labels)
