"""ConvNeXt V2, written from the paper.

Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", CVPR 2023,
https://arxiv.org/abs/2301.00808.

The network is ConvNeXt V1 (see ``ConvNeXtModelV1``) with one change inside every block: LayerScale
is removed and Global Response Normalization (GRN) is inserted after the GELU of the MLP. GRN makes
channels compete with each other, which the paper shows prevents "feature collapse" (many dead or
saturated channels) and lets the model profit from masked-autoencoder pre-training. Parameter names
follow the official code (facebookresearch/ConvNeXt-V2).
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from convnext_v2.ConvNeXtModelV1 import ConvNeXt, ModelSize, Pretrained

__all__ = [
    "GRN",
    "Block",
    "ConvNeXtV2",
    "convnextv2_atto",
    "convnextv2_femto",
    "convnextv2_pico",
    "convnextv2_nano",
    "convnextv2_tiny",
    "convnextv2_base",
    "convnextv2_large",
    "convnextv2_huge",
]


class GRN(nn.Module):
    """Global Response Normalization (paper, Section 3, Eq. 1-3) on channels-last (N, H, W, C) input.

    1. aggregate: the L2 norm of each channel's whole feature map;
    2. normalise: divide by the mean of those norms over channels (each channel's relative importance);
    3. calibrate: rescale the input by it, with learnt gamma/beta and a residual connection.
    gamma and beta start at zero, so a fresh GRN is exactly the identity.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        # Shaped (1, 1, 1, C) as in the official checkpoints, so they broadcast over (N, H, W, C).
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)  # (N, H, W, C) -> (N, 1, 1, C)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)  # (N, 1, 1, C) / (N, 1, 1, 1)
        return self.gamma * (x * nx) + self.beta + x  # (N, H, W, C)


class Block(nn.Module):
    """ConvNeXt V2 block: depthwise 7x7 -> LN -> Linear(4C) -> GELU -> GRN -> Linear(C) -> drop path, + input."""

    def __init__(self, dim: int, drop_path: float = 0.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x)  # (N, C, H, W)
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.norm(x)
        x = self.act(self.pwconv1(x))  # (N, H, W, C) -> (N, H, W, 4C)
        x = self.grn(x)  # (N, H, W, 4C), channels now compete
        x = self.pwconv2(x)  # (N, H, W, 4C) -> (N, H, W, C)
        x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        return shortcut + self.drop_path(x)


class ConvNeXtV2(ConvNeXt):
    """ConvNeXt V2 image classifier: the V1 network with V2 blocks (no LayerScale)."""

    # Official depths and widths (paper, Section 5 "Model scaling").
    SIZES = {
        "atto": ModelSize((2, 2, 6, 2), (40, 80, 160, 320), "fcmae_ft_in1k"),
        "femto": ModelSize((2, 2, 6, 2), (48, 96, 192, 384), "fcmae_ft_in1k"),
        "pico": ModelSize((2, 2, 6, 2), (64, 128, 256, 512), "fcmae_ft_in1k"),
        "nano": ModelSize((2, 2, 8, 2), (80, 160, 320, 640), "fcmae_ft_in1k"),
        "tiny": ModelSize((3, 3, 9, 3), (96, 192, 384, 768), "fcmae_ft_in1k"),
        "base": ModelSize((3, 3, 27, 3), (128, 256, 512, 1024), "fcmae_ft_in1k"),
        "large": ModelSize((3, 3, 27, 3), (192, 384, 768, 1536), "fcmae_ft_in1k"),
        "huge": ModelSize((3, 3, 27, 3), (352, 704, 1408, 2816), "fcmae_ft_in1k"),
    }
    ARCH = "convnextv2"

    def __init__(self, **kwargs):
        """The arguments of :class:`ConvNeXt` (by keyword), except ``layer_scale_init_value``."""
        if "layer_scale_init_value" in kwargs:
            raise TypeError("ConvNeXt V2 has no LayerScale: layer_scale_init_value is a ConvNeXt (V1) option")
        super().__init__(layer_scale_init_value=0.0, **kwargs)

    def build_block(self, dim: int, drop_path: float) -> nn.Module:
        return Block(dim, drop_path)


def convnextv2_atto(pretrained: Pretrained = False, **kwargs) -> ConvNeXtV2:
    return ConvNeXtV2.from_size("atto", pretrained, **kwargs)


def convnextv2_femto(pretrained: Pretrained = False, **kwargs) -> ConvNeXtV2:
    return ConvNeXtV2.from_size("femto", pretrained, **kwargs)


def convnextv2_pico(pretrained: Pretrained = False, **kwargs) -> ConvNeXtV2:
    return ConvNeXtV2.from_size("pico", pretrained, **kwargs)


def convnextv2_nano(pretrained: Pretrained = False, **kwargs) -> ConvNeXtV2:
    return ConvNeXtV2.from_size("nano", pretrained, **kwargs)


def convnextv2_tiny(pretrained: Pretrained = False, **kwargs) -> ConvNeXtV2:
    return ConvNeXtV2.from_size("tiny", pretrained, **kwargs)


def convnextv2_base(pretrained: Pretrained = False, **kwargs) -> ConvNeXtV2:
    return ConvNeXtV2.from_size("base", pretrained, **kwargs)


def convnextv2_large(pretrained: Pretrained = False, **kwargs) -> ConvNeXtV2:
    return ConvNeXtV2.from_size("large", pretrained, **kwargs)


def convnextv2_huge(pretrained: Pretrained = False, **kwargs) -> ConvNeXtV2:
    return ConvNeXtV2.from_size("huge", pretrained, **kwargs)


# The source document writes ``from ConvNeXtModelV2 import convnext_tiny``: keep those names working.
convnext_atto = convnextv2_atto
convnext_femto = convnextv2_femto
convnext_pico = convnextv2_pico
convnext_nano = convnextv2_nano
convnext_tiny = convnextv2_tiny
convnext_base = convnextv2_base
convnext_large = convnextv2_large
convnext_huge = convnextv2_huge
