"""HybridMedNet: backbone -> FPN -> per-scale (+ cross-scale) attention -> dynamic fusion -> head."""
from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Any, Mapping

import torch
import torch.nn as nn
from torchvision.ops import FeaturePyramidNetwork

from shared.export import register_model

from .attention import MultiScaleAttention
from .backbones import build_backbone
from .classifier import HierarchicalClassifier, HierarchicalOutput, MultiLabelClassifier
from .fusion import DynamicFeatureFusion


class HybridMedNet(nn.Module):
    """Multi-scale hybrid classifier for multi-label medical images.

    ``config.MODEL`` supplies every setting (see ``configs/default_config.py``). ``forward`` returns
    [B, num_classes] logits, or ``HierarchicalOutput(coarse, fine)`` when ``MODEL['hierarchical']``.
    """

    def __init__(self, config):
        super().__init__()
        cfg = config.MODEL
        self.hierarchical = cfg["hierarchical"]
        self.num_classes = cfg["num_classes"]
        self.backbone = build_backbone(cfg["backbone"], pretrained=cfg["pretrained"])
        channels = self.backbone.feature_channels
        self.fpn = FeaturePyramidNetwork(channels, cfg["fpn_channels"])
        self.attention = MultiScaleAttention(
            cfg["fpn_channels"], num_scales=len(channels), modern=cfg["use_modern_attention"],
            cross_scale=cfg["use_cross_scale_attention"], num_heads=cfg["num_heads"],
            pool_size=cfg["attention_pool_size"],
        )
        self.fusion = DynamicFeatureFusion([cfg["fpn_channels"]] * len(channels), cfg["fusion_channels"])
        if self.hierarchical:
            self.classifier = HierarchicalClassifier(cfg["fusion_channels"], cfg["num_coarse_classes"],
                                                     cfg["num_classes"], cfg["dropout"], cfg["head_norm"])
        else:
            self.classifier = MultiLabelClassifier(cfg["fusion_channels"], cfg["num_classes"], cfg["dropout"],
                                                   cfg["head_norm"])

    def no_weight_decay(self) -> set[str]:
        """Names timm's optimizer factory exempts from weight decay, gathered from every submodule
        that declares some (Vision Mamba's A, D and position table, the finding heads' biases)."""
        return {f"{prefix}.{name}" for prefix, module in self.named_modules()
                if module is not self and hasattr(module, "no_weight_decay") for name in module.no_weight_decay()}

    def multiscale_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: [B, 3, H, W] -> attended FPN maps [B, fpn_channels, H/s, W/s] for s = 4, 8, 16, 32."""
        features = self.backbone(x)
        pyramid = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))
        return self.attention(list(pyramid.values()))

    def forward(self, x: torch.Tensor) -> torch.Tensor | HierarchicalOutput:
        return self.classifier(self.fusion(self.multiscale_features(x)))


@register_model("hybridmednet")
def build_exported(architecture: Mapping[str, Any]) -> HybridMedNet:
    """HybridMedNet from an export's architecture (its MODEL section), without downloading weights."""
    return HybridMedNet(SimpleNamespace(MODEL={**architecture, "pretrained": False}))
