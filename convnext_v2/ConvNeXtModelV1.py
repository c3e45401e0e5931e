"""ConvNeXt V1, written from the paper.

Liu et al., "A ConvNet for the 2020s", CVPR 2022, https://arxiv.org/abs/2201.03545.
Parameter names follow the official code (facebookresearch/ConvNeXt), so official checkpoints load
unchanged; timm checkpoints load through the key mapping in ``convnext_v2.pretrained``.

For an (N, 3, H, W) image the network is:

    stem          4x4 conv, stride 4 ("patchify") + LayerNorm       -> (N, C0, H/4,  W/4)
    stage 1       depths[0] blocks at width C0
    downsample    LayerNorm + 2x2 conv, stride 2                     -> (N, C1, H/8,  W/8)
    stage 2       depths[1] blocks at width C1
    ...           (two more downsample + stage pairs)                -> (N, C3, H/32, W/32)
    head          global average pool + LayerNorm + Linear           -> (N, num_classes)
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from convnext_v2.pretrained import load_pretrained

__all__ = [
    "Block",
    "ConvNeXt",
    "LayerNorm2d",
    "ModelSize",
    "convnext_base",
    "convnext_large",
    "convnext_small",
    "convnext_tiny",
    "convnext_xlarge",
]

Pretrained = bool | str | os.PathLike


class ModelSize(NamedTuple):
    """Blocks per stage, channels per stage, and the timm tag of the weights ``pretrained=True`` loads."""

    depths: tuple[int, int, int, int]
    dims: tuple[int, int, int, int]
    pretrained_tag: str


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a channels-first (N, C, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


class Block(nn.Module):
    """ConvNeXt V1 block: depthwise 7x7 -> LN -> Linear(4C) -> GELU -> Linear(C) -> LayerScale -> drop path, + input.

    The paper's 1x1 convolutions are Linear layers on a channels-last tensor: the same maths, and
    it lets LayerNorm use its fast channels-last kernel. LayerScale multiplies the residual branch
    by a learnt per-channel factor that starts at ``layer_scale_init_value`` (1e-6), so a fresh
    block is almost the identity and very deep stacks train stably.
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (
            nn.Parameter(torch.full((dim,), layer_scale_init_value)) if layer_scale_init_value > 0 else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x)  # (N, C, H, W): 7x7 spatial mixing, one filter per channel
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.norm(x)
        x = self.act(self.pwconv1(x))  # (N, H, W, C) -> (N, H, W, 4C): inverted bottleneck
        x = self.pwconv2(x)  # (N, H, W, 4C) -> (N, H, W, C)
        if self.gamma is not None:
            x = self.gamma * x  # LayerScale, broadcast over (N, H, W)
        x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        return shortcut + self.drop_path(x)


class ConvNeXt(nn.Module):
    """ConvNeXt V1 image classifier.

    ``drop_path_rate`` is the stochastic-depth rate of the last block; it rises linearly from 0 at
    the first block. ``head_init_scale`` scales the freshly initialised classifier (the paper uses
    values below 1 when fine-tuning at higher resolution). ``ConvNeXtV2`` differs only in its
    blocks, so it overrides :meth:`build_block` and :attr:`SIZES`.
    """

    # Official depths and widths (paper, Section 2.6 and Table 1 footnotes).
    SIZES: dict[str, ModelSize] = {
        "tiny": ModelSize((3, 3, 9, 3), (96, 192, 384, 768), "fb_in1k"),
        "small": ModelSize((3, 3, 27, 3), (96, 192, 384, 768), "fb_in1k"),
        "base": ModelSize((3, 3, 27, 3), (128, 256, 512, 1024), "fb_in1k"),
        "large": ModelSize((3, 3, 27, 3), (192, 384, 768, 1536), "fb_in1k"),
        # XLarge was only released trained on ImageNet-22k (then fine-tuned on ImageNet-1k).
        "xlarge": ModelSize((3, 3, 27, 3), (256, 512, 1024, 2048), "fb_in22k_ft_in1k"),
    }
    # Model names are f"{ARCH}_{size}", the same as in timm.
    ARCH = "convnext"

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        head_init_scale: float = 1.0,
    ):
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt has 4 stages; got depths={list(depths)} and dims={list(dims)}")
        self.layer_scale_init_value = layer_scale_init_value
        self.num_classes = num_classes

        # downsample_layers[0] is the stem; downsample_layers[i > 0] halves the resolution before stage i.
        stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(dims[i], eps=1e-6), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        # timm's description of the stage outputs; its reductions (4, 8, 16, 32) tell how small an image may be
        strides = [m.stride[0] for layer in self.downsample_layers for m in layer if isinstance(m, nn.Conv2d)]
        self.feature_info = [{"num_chs": dim, "reduction": math.prod(strides[: i + 1]), "module": f"stages.{i}"}
                             for i, dim in enumerate(dims)]

        num_blocks = sum(depths)
        drop_path_rates = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.stages = nn.ModuleList()
        first_block = 0
        for depth, dim in zip(depths, dims):
            rates = drop_path_rates[first_block : first_block + depth]
            self.stages.append(nn.Sequential(*(self.build_block(dim, rate) for rate in rates)))
            first_block += depth

        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)  # applied after global pooling
        self.head = nn.Linear(dims[-1], num_classes)

        self.apply(_init_weights)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    def build_block(self, dim: int, drop_path: float) -> nn.Module:
        return Block(dim, drop_path, self.layer_scale_init_value)

    def no_weight_decay(self) -> set[str]:
        """Every parameter except conv and linear weights: norms, biases, LayerScale and GRN.

        timm's optimizer factory already spares 1-D tensors and biases; this also covers GRN's
        (1, 1, 1, C) gamma and beta, which are shaped for broadcasting but are per-channel scales.
        """
        decayed = {
            f"{name}.weight" for name, module in self.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))
        }
        return {name for name, _ in self.named_parameters() if name not in decayed}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised features: (N, in_chans, H, W) -> (N, dims[-1])."""
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))  # (N, C_i, H / 2^(i+2), W / 2^(i+2))
        return self.norm(x.mean(dim=(-2, -1)))  # global average pool: (N, C3, h, w) -> (N, C3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))  # (N, C3) -> (N, num_classes)

    @classmethod
    def from_size(cls, size: str, pretrained: Pretrained = False, **kwargs) -> "ConvNeXt":
        """Build a named size. ``pretrained``: True downloads the timm weights for the size
        (``f"{ARCH}_{size}.{pretrained_tag}"``), a path loads an official or timm checkpoint file."""
        spec = cls.SIZES[size]
        model = cls(depths=spec.depths, dims=spec.dims, **kwargs)
        if pretrained:
            load_pretrained(model, pretrained, hub_name=f"{cls.ARCH}_{size}.{spec.pretrained_tag}")
        return model


def _init_weights(module: nn.Module) -> None:
    """Truncated normal (std 0.02) for conv and linear weights, zero biases, as in the paper."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def convnext_tiny(pretrained: Pretrained = False, **kwargs) -> ConvNeXt:
    return ConvNeXt.from_size("tiny", pretrained, **kwargs)


def convnext_small(pretrained: Pretrained = False, **kwargs) -> ConvNeXt:
    return ConvNeXt.from_size("small", pretrained, **kwargs)


def convnext_base(pretrained: Pretrained = False, **kwargs) -> ConvNeXt:
    return ConvNeXt.from_size("base", pretrained, **kwargs)


def convnext_large(pretrained: Pretrained = False, **kwargs) -> ConvNeXt:
    return ConvNeXt.from_size("large", pretrained, **kwargs)


def convnext_xlarge(pretrained: Pretrained = False, **kwargs) -> ConvNeXt:
    return ConvNeXt.from_size("xlarge", pretrained, **kwargs)
