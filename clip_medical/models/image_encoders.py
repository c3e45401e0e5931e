"""Image encoders under the guide's names.

Architectures are data: ``IMAGE_ENCODERS`` maps each name to a spec that builds a backbone whose
``forward(images [B, 3, H, W])`` returns pooled features ``[B, num_features]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import timm
import torch
import torch.nn as nn

from shared import total_stride
from clip_medical.models.starnet_dual_pyramid_rcf import StarNetDualPyramidRCF

logger = logging.getLogger(__name__)


def create_timm_backbone(timm_name: str, pretrained: bool, **kwargs) -> nn.Module:
    """A timm model without classifier head.

    Pretrained weights are used "when available": if the hub is unreachable and the weights are
    not cached (an offline machine; set HF_HUB_OFFLINE=1 to skip the network retries), we warn and
    fall back to random initialisation instead of aborting the run.
    """
    if pretrained:
        try:
            return timm.create_model(timm_name, pretrained=True, num_classes=0, **kwargs)
        except OSError as err:  # huggingface_hub's "not found / not cached" errors are OSErrors
            logger.warning("Pretrained weights for %s are unavailable (%s); using random initialisation.",
                           timm_name, err)
    return timm.create_model(timm_name, pretrained=False, num_classes=0, **kwargs)


@dataclass(frozen=True)
class TimmEncoder:
    """A timm architecture used as a pooled-feature backbone."""

    timm_name: str
    takes_img_size: bool = False  # ViT position embeddings are built for (and resampled to) the input size

    def build(self, pretrained: bool, img_size: int) -> nn.Module:
        kwargs = {"img_size": img_size} if self.takes_img_size else {}
        return create_timm_backbone(self.timm_name, pretrained, **kwargs)


@dataclass(frozen=True)
class StarNetDualPyramidEncoder:
    """The guide author's StarNet dual-pyramid RCF; its local path can start from timm's StarNet-S1 weights."""

    def build(self, pretrained: bool, img_size: int) -> nn.Module:
        return StarNetDualPyramidRCF(local_pyramid=create_timm_backbone("starnet_s1", pretrained))


IMAGE_ENCODERS: dict[str, TimmEncoder | StarNetDualPyramidEncoder] = {
    "starnet_dual_pyramid_rcf": StarNetDualPyramidEncoder(),
    **{f"resnet{depth}": TimmEncoder(f"resnet{depth}") for depth in (18, 34, 50, 101, 152)},
    "vit": TimmEncoder("vit_base_patch16_224", takes_img_size=True),
    # timm has native ImageNet weights for b0-b5 and TF-ported ones (same-padding variant) for b6/b7.
    **{f"efficientnet-b{i}": TimmEncoder(f"efficientnet_b{i}") for i in range(6)},
    **{f"efficientnet-b{i}": TimmEncoder(f"tf_efficientnet_b{i}") for i in (6, 7)},
    **{f"convnext-{size}": TimmEncoder(f"convnext_{size}") for size in ("tiny", "small", "base", "large")},
}


def build_image_encoder(name: str, pretrained: bool = True, img_size: int = 224) -> nn.Module:
    """Backbone for a guide encoder name; ``module.num_features`` is its output width."""
    try:
        spec = IMAGE_ENCODERS[name]
    except KeyError:
        raise ValueError(f"Unknown image encoder '{name}'. Choose one of: {', '.join(IMAGE_ENCODERS)}") from None
    return spec.build(pretrained=pretrained, img_size=img_size)


def image_encoder_stride(name: str) -> int:
    """The total stride of an encoder (the smallest image size it takes), read from a weightless copy built on
    the meta device: no memory, no download, so settings can be checked before anything is loaded."""
    with torch.device("meta"):
        return total_stride(build_image_encoder(name, pretrained=False))
