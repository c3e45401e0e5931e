"""Config -> model: the plain 3D ResNet (pretraining) or Mosa / MosaShared on top of it."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from alzheimer_mosa.config import Config
from alzheimer_mosa.mosa_net import Mosa
from alzheimer_mosa.mosa_net_simple import MosaShared
from alzheimer_mosa.resnet import ResNet3d, build_resnet3d, load_pretrained_resnet


def build_backbone(cfg: Config) -> ResNet3d:
    """The configured 3D ResNet, with ``pretrained_path`` weights when ``pretrained`` is on."""
    b = cfg.backbone
    backbone = build_resnet3d(b.model_type, b.in_channels, b.num_classes, width=b.width)
    if b.pretrained:
        load_pretrained_resnet(backbone, Path(b.pretrained_path))
    return backbone


def build_mosa(cfg: Config) -> nn.Module:
    """Mosa (a transformer per scale) or MosaShared (one shared transformer), sized for ``target_size``."""
    m = cfg.mosa
    model_cls = MosaShared if m.use_shared_transformer else Mosa
    return model_cls(
        build_backbone(cfg), tuple(cfg.data.target_size), cfg.backbone.num_classes, embed_dim=m.embed_dim, depth=m.depth,
        num_heads=m.num_heads, mlp_ratio=m.mlp_ratio, qkv_bias=m.qkv_bias, drop_rate=m.drop_rate,
        attn_drop_rate=m.attn_drop_rate,
    )
