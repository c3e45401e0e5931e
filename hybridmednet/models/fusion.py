"""Dynamic fusion of the multi-scale maps with per-image softmax weights over the scales."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d


class DynamicFeatureFusion(nn.Module):
    """Project each scale to ``out_channels``, upsample to the finest grid, and sum with softmax weights.

    The weights are predicted per image from the globally pooled scales, so an image whose
    findings are small can lean on the fine maps and one with large opacities on the coarse maps.
    Projection happens at each map's own resolution (cheaper than projecting after upsampling);
    LayerNorm rather than BatchNorm keeps the result independent of the batch composition.
    """

    def __init__(self, channels_list: list[int], out_channels: int):
        super().__init__()
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 1, bias=False), LayerNorm2d(out_channels), nn.ReLU(inplace=True))
            for c in channels_list
        )
        self.weight_logits = nn.Linear(sum(channels_list), len(channels_list))

    def scale_weights(self, features: list[torch.Tensor]) -> torch.Tensor:
        """[B, num_scales] softmax weights, each row sums to 1."""
        pooled = torch.cat([f.mean(dim=(2, 3)) for f in features], dim=1)
        return self.weight_logits(pooled).softmax(dim=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features: [B, C_i, H_i, W_i], finest first -> [B, out_channels, H_0, W_0]."""
        weights = self.scale_weights(features)
        size = features[0].shape[-2:]
        fused = 0
        for i, (f, project) in enumerate(zip(features, self.projections)):
            f = project(f)
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            fused = fused + weights[:, i, None, None, None] * f
        return fused
