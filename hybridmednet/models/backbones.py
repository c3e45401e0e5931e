"""Backbone registry: every name the config accepts, mapped to a feature extractor and its settings.

Each backbone returns four NCHW feature maps at strides 4, 8, 16 and 32 and exposes their channel
counts as ``feature_channels``. Architectures are data in ``BACKBONES``: adding one is one line.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import timm
import torch
import torch.nn as nn

from .vision_mamba import VisionMambaFeatures

EXPECTED_STRIDES = (4, 8, 16, 32)


class TimmFeatures(nn.Module):
    """A timm model in ``features_only`` mode, with channels-last outputs (Swin) turned into NCHW."""

    def __init__(self, model_name: str, pretrained: bool, out_indices: tuple[int, ...] = (0, 1, 2, 3),
                 nhwc_output: bool = False, **timm_kwargs: Any):
        super().__init__()
        self.body = timm.create_model(model_name, pretrained=pretrained, features_only=True,
                                      out_indices=out_indices, **timm_kwargs)
        strides = tuple(self.body.feature_info.reduction())
        if strides != EXPECTED_STRIDES:
            raise ValueError(f"{model_name} with out_indices={out_indices} gives strides {strides}, "
                             f"expected {EXPECTED_STRIDES}")
        self.feature_channels = list(self.body.feature_info.channels())
        self.nhwc_output = nhwc_output

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(x)
        if self.nhwc_output:  # Swin stages emit [B, H, W, C]
            features = [f.permute(0, 3, 1, 2) for f in features]
        return features


class BackboneSpec(NamedTuple):
    builder: type[nn.Module]
    kwargs: dict[str, Any]


def _timm(model_name: str, **kwargs: Any) -> BackboneSpec:
    return BackboneSpec(TimmFeatures, {"model_name": model_name, **kwargs})


def _vim(embed_dim: int, depth: int, drop_path_rate: float) -> BackboneSpec:
    return BackboneSpec(VisionMambaFeatures, {"embed_dim": embed_dim, "depth": depth,
                                              "drop_path_rate": drop_path_rate})


_SWIN = {"nhwc_output": True, "dynamic_img_size": True}   # any input size, shifted-window masks per size
_FROM_STEM = {"out_indices": (1, 2, 3, 4)}                 # these nets expose a stride-2 stem level first

BACKBONES: dict[str, BackboneSpec] = {
    "convnext_tiny": _timm("convnext_tiny"),
    "convnext_small": _timm("convnext_small"),
    "convnext_base": _timm("convnext_base"),
    "convnext_large": _timm("convnext_large"),
    "swin_tiny": _timm("swin_tiny_patch4_window7_224", **_SWIN),
    "swin_small": _timm("swin_small_patch4_window7_224", **_SWIN),
    "swin_base": _timm("swin_base_patch4_window7_224", **_SWIN),
    "efficientnetv2_s": _timm("tf_efficientnetv2_s", **_FROM_STEM),
    "efficientnetv2_m": _timm("tf_efficientnetv2_m", **_FROM_STEM),
    "efficientnetv2_l": _timm("tf_efficientnetv2_l", **_FROM_STEM),
    "resnet34": _timm("resnet34", **_FROM_STEM),
    "resnet50": _timm("resnet50", **_FROM_STEM),
    "resnet101": _timm("resnet101", **_FROM_STEM),
    "vim_tiny": _vim(embed_dim=192, depth=24, drop_path_rate=0.0),
    "vim_small": _vim(embed_dim=384, depth=24, drop_path_rate=0.05),
    "vim_base": _vim(embed_dim=768, depth=24, drop_path_rate=0.1),
}


def build_backbone(name: str, pretrained: bool) -> nn.Module:
    """Instantiate a registered backbone; unknown names list the valid ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    return spec.builder(pretrained=pretrained, **spec.kwargs)
