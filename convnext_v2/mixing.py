"""MixUp, CutMix and label smoothing as one batch transform that always yields soft targets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


@dataclass
class MixConfig:
    mixup: bool = True  # MixUp: blend each image with its neighbour in the batch (with both on, one per batch)
    cutmix: bool = True  # CutMix: paste a box of the neighbour image; both off = plain one-hot labels
    mixup_alpha: float = 0.8  # MixUp ratio ~ Beta(alpha, alpha); the ConvNeXt recipe's value
    cutmix_alpha: float = 1.0  # CutMix box area ~ Beta(alpha, alpha)
    label_smoothing: float = 0.1  # probability mass spread evenly over all classes, after mixing


class MixUpCutMix:
    """``(images (N, C, H, W), labels (N,)) -> (images, soft targets (N, num_classes))``.

    With both MixUp and CutMix on, each batch gets one of them at random (as in the ConvNeXt
    recipe); with neither, the labels only become one-hot. Label smoothing is applied last, so it
    works in every combination. torchvision's transforms pair each image with its neighbour in the
    batch, so odd batch sizes (the last batch of an epoch) are fine, unlike timm's ``Mixup``.
    """

    def __init__(
        self,
        num_classes: int,
        mixup: bool = True,
        cutmix: bool = True,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        label_smoothing: float = 0.1,
    ):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        mixers = []
        if mixup:
            mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix:
            mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.mix = v2.RandomChoice(mixers) if mixers else None

    @classmethod
    def from_config(cls, num_classes: int, cfg: MixConfig) -> "MixUpCutMix":
        return cls(num_classes, cfg.mixup, cfg.cutmix, cfg.mixup_alpha, cfg.cutmix_alpha, cfg.label_smoothing)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mix is not None:
            images, targets = self.mix(images, labels)  # targets: (N, num_classes), rows sum to 1
        else:
            targets = F.one_hot(labels, self.num_classes).to(images.dtype)
        # Label smoothing: move `label_smoothing` of the probability mass evenly onto all classes.
        targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        return images, targets
