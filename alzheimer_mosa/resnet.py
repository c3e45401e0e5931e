"""3D ResNets (10/18/34/50) for volumetric classification and as the Mosa feature extractor.

Layout: inputs are ``(B, C, D, H, W)``. The stem (7^3 conv, stride 2, then a stride-2 max-pool) and
the four stages give feature maps at strides 2, 4, 8, 16 and 32 (the stem map is taken before the
max-pool). Module names follow torchvision / MedicalNet (``conv1``, ``bn1``, ``layerN.M.convK``,
``downsample.0/1``) so MedicalNet checkpoints load through :func:`pretrained_key_map`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from shared.checkpoint import CheckpointError, load_checkpoint

logger = logging.getLogger(__name__)

Size3d = tuple[int, int, int]


def conv3x3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock3d(nn.Module):
    """Two 3x3x3 convolutions with an identity (or projected) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck3d(nn.Module):
    """1x1x1 reduce, 3x3x3, 1x1x1 expand (x4), with an identity (or projected) shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = conv1x1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block3d = type[BasicBlock3d] | type[Bottleneck3d]

STAGE_WIDTH_FACTORS = (1, 2, 4, 8)  # planes of stage k = width * factor (64, 128, 256, 512 at width 64)
STAGE_STRIDES = (1, 2, 2, 2)

# depth -> (block type, blocks per stage), as in He et al. 2016 and MedicalNet.
RESNET_SPECS: dict[str, tuple[Block3d, tuple[int, int, int, int]]] = {
    "resnet10_3d": (BasicBlock3d, (1, 1, 1, 1)),
    "resnet18_3d": (BasicBlock3d, (2, 2, 2, 2)),
    "resnet34_3d": (BasicBlock3d, (3, 4, 6, 3)),
    "resnet50_3d": (Bottleneck3d, (3, 4, 6, 3)),
}


def _downsampled(size: int, times: int) -> int:
    """Spatial size after ``times`` stride-2 layers with 'same' padding (each gives ceil(n / 2))."""
    for _ in range(times):
        size = math.ceil(size / 2)
    return size


class ResNet3d(nn.Module):
    """3D ResNet classifier; ``get_feature_maps`` exposes the multi-scale features for Mosa."""

    def __init__(self, block: Block3d, layers: Sequence[int], in_channels: int = 1, num_classes: int = 2,
                 width: int = 64):
        super().__init__()
        self.block = block
        self.stem_channels = self.in_planes = width
        self.stage_planes = [width * factor for factor in STAGE_WIDTH_FACTORS]
        self.conv1 = nn.Conv3d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, self.stage_planes[0], layers[0], STAGE_STRIDES[0])
        self.layer2 = self._make_layer(block, self.stage_planes[1], layers[1], STAGE_STRIDES[1])
        self.layer3 = self._make_layer(block, self.stage_planes[2], layers[2], STAGE_STRIDES[2])
        self.layer4 = self._make_layer(block, self.stage_planes[3], layers[3], STAGE_STRIDES[3])
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.num_features = self.stage_planes[3] * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _make_layer(self, block: Block3d, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1x1(self.in_planes, planes * block.expansion, stride),
                nn.BatchNorm3d(planes * block.expansion),
            )
        stage = [block(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * block.expansion
        stage += [block(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of the five maps returned by :meth:`get_feature_maps` (stem, stage 1..4)."""
        return [self.stem_channels] + [planes * self.block.expansion for planes in self.stage_planes]

    @staticmethod
    def feature_map_sizes(input_size: Size3d) -> list[Size3d]:
        """Spatial sizes of the five feature maps for an input of ``input_size`` (D, H, W)."""
        # stem conv: 1 halving; stage 1 also sits behind the max-pool; stages 2-4 halve once more each.
        halvings = (1, 2, 3, 4, 5)
        return [tuple(_downsampled(s, n) for s in input_size) for n in halvings]  # type: ignore[misc]

    def get_feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, D, H, W) -> [stem, stage1, stage2, stage3, stage4] feature maps."""
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [stem, c1, c2, c3, c4]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> pooled (B, num_features)."""
        return torch.flatten(self.avgpool(self.get_feature_maps(x)[-1]), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def build_resnet3d(model_type: str, in_channels: int = 1, num_classes: int = 2, width: int = 64) -> ResNet3d:
    """``width`` 64 is the standard ResNet (and what MedicalNet weights need); smaller is cheaper."""
    if model_type not in RESNET_SPECS:
        raise ValueError(f"unknown model_type {model_type!r}; choose one of {sorted(RESNET_SPECS)}")
    block, layers = RESNET_SPECS[model_type]
    return ResNet3d(block, layers, in_channels=in_channels, num_classes=num_classes, width=width)


def pretrained_key_map(key: str) -> str | None:
    """Map a checkpoint key to our ResNet's; ``None`` drops it.

    MedicalNet trains under ``nn.DataParallel`` (``module.`` prefix) and ends in a segmentation
    head ``conv_seg`` that has no counterpart in a classifier; a Mosa checkpoint keeps the ResNet
    under ``backbone.``.
    """
    key = key.removeprefix("module.").removeprefix("backbone.")
    if key.startswith("conv_seg."):
        return None
    return key


def extract_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The weights inside a checkpoint file saved by MedicalNet, by us, or as a bare state dict."""
    for field in ("state_dict", "model"):
        if isinstance(checkpoint.get(field), dict):
            return checkpoint[field]
    return checkpoint


def load_pretrained_resnet(model: ResNet3d, path: str | Path) -> tuple[list[str], list[str]]:
    """Load ResNet weights (MedicalNet, ``pretrain_resnet.py`` or Mosa checkpoints) into ``model``.

    Keys go through :func:`pretrained_key_map`; the classifier ``fc`` is skipped because its class count
    belongs to the pretraining task. Returns ``(missing, unexpected)`` key lists. A missing or unreadable
    file, or a tensor whose shape differs from the model's, is a CheckpointError naming it, not a silent skip.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained ResNet weights not found: {path} (set backbone.pretrained_path)")
    raw = extract_state_dict(load_checkpoint(path))
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in raw.items():
        new_key = pretrained_key_map(key)
        if new_key is None or new_key.startswith("fc."):
            continue
        if new_key not in own:
            unexpected.append(key)
            continue
        if tuple(tensor.shape) != tuple(own[new_key].shape):
            raise CheckpointError(
                f"{path}: weight {key!r} -> {new_key!r} has shape {tuple(tensor.shape)}, "
                f"model expects {tuple(own[new_key].shape)} (different depth, width or in_channels?)"
            )
        mapped[new_key] = tensor
    if not mapped:
        raise CheckpointError(f"{path}: no weight matches the model; is this a 3D ResNet checkpoint?")
    missing = [k for k in own if k not in mapped and not k.startswith("fc.")]
    model.load_state_dict(mapped, strict=False)
    logger.info("loaded %d tensors from %s (%d missing, %d unexpected)", len(mapped), path, len(missing), len(unexpected))
    if missing:
        logger.warning("weights missing from %s (left at initialisation): %s", path, missing[:10])
    return missing, unexpected
