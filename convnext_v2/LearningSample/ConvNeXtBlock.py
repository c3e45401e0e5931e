"""One ConvNeXt block, spelled out step by step for learning.

This is the block as the papers draw it (ConvNeXt, Fig. 4; ConvNeXt V2, Fig. 5): every layer works
on channels-first (N, C, H, W) tensors and the "pointwise" layers are real 1x1 convolutions.
The models in ``ConvNeXtModelV1`` / ``ConvNeXtModelV2`` compute exactly the same function but
permute to channels-last and use ``nn.Linear`` for the 1x1 convolutions, which is faster; the test
``test_learning_block_matches_model_blocks`` proves the two agree.

Where the design choices come from (ConvNeXt paper, Section 2, "modernizing a ResNet"):

* 7x7 depthwise convolution: one 7x7 filter per channel, the ConvNet analogue of a Swin
  Transformer's local self-attention window (spatial mixing only, no channel mixing).
* one LayerNorm per block instead of many BatchNorms, as in Transformers.
* inverted bottleneck: expand channels 4x, GELU, project back; the Transformer MLP.
* residual connection around it all; V1 scales the branch with LayerScale (starts at 1e-6, so a
  new block is nearly the identity), V2 drops LayerScale and adds Global Response Normalization.

Run ``python -m convnext_v2.LearningSample.ConvNeXtBlock`` to print the shape after every step.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over C of an (N, C, H, W) tensor, written out: normalise each pixel's channel vector."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)  # (N, 1, H, W)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)  # (N, 1, H, W), biased like nn.LayerNorm
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]  # (C,) -> (C, 1, 1) broadcasts


class ChannelsFirstGRN(nn.Module):
    """Global Response Normalization of ConvNeXt V2 on an (N, C, H, W) tensor."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))  # zero: a new GRN is the identity
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. Aggregate: how strongly is each channel active over the whole image? L2 norm over H, W.
        strength = x.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()  # (N, C, 1, 1)
        # 2. Normalise: compare each channel with the average channel (divisive normalisation).
        relative = strength / (strength.mean(dim=1, keepdim=True) + self.eps)  # (N, C, 1, 1)
        # 3. Calibrate: rescale the features by their relative importance, keep a residual path.
        return x + self.gamma * (x * relative) + self.beta


class ConvNeXtBlock(nn.Module):
    """A ConvNeXt block; ``version="v1"`` uses LayerScale, ``version="v2"`` uses GRN."""

    def __init__(self, dim: int, version: str = "v2", layer_scale_init_value: float = 1e-6):
        super().__init__()
        if version not in ("v1", "v2"):
            raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
        self.version = version
        self.depthwise = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)  # groups=dim: per channel
        self.norm = ChannelsFirstLayerNorm(dim)
        self.expand = nn.Conv2d(dim, 4 * dim, kernel_size=1)  # 1x1 conv: mixes channels at each pixel
        self.act = nn.GELU()
        self.grn = ChannelsFirstGRN(4 * dim) if version == "v2" else None
        self.project = nn.Conv2d(4 * dim, dim, kernel_size=1)
        self.layer_scale = (
            nn.Parameter(torch.full((1, dim, 1, 1), layer_scale_init_value)) if version == "v1" else None
        )

    def forward(self, x: torch.Tensor, trace: bool = False) -> torch.Tensor:
        """``trace=True`` prints the shape after each step."""
        steps = [("input", x)]
        residual = x
        x = self.depthwise(x)
        steps.append(("7x7 depthwise conv", x))  # (N, C, H, W): spatial mixing
        x = self.norm(x)
        steps.append(("LayerNorm", x))  # (N, C, H, W)
        x = self.act(self.expand(x))
        steps.append(("1x1 conv to 4C + GELU", x))  # (N, 4C, H, W)
        if self.grn is not None:
            x = self.grn(x)
            steps.append(("GRN", x))  # (N, 4C, H, W)
        x = self.project(x)
        steps.append(("1x1 conv back to C", x))  # (N, C, H, W)
        if self.layer_scale is not None:
            x = self.layer_scale * x
            steps.append(("LayerScale", x))  # (N, C, H, W)
        x = residual + x
        steps.append(("+ residual", x))  # (N, C, H, W): same shape as the input
        if trace:
            for name, value in steps:
                print(f"{name:<24} {tuple(value.shape)}")
        return x


if __name__ == "__main__":
    for version in ("v1", "v2"):
        print(f"ConvNeXt {version} block, 96 channels, 56x56 feature map:")
        ConvNeXtBlock(96, version=version)(torch.randn(2, 96, 56, 56), trace=True)
        print()
