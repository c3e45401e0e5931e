"""Config -> model: the plain 3D ResNet (pretraining) or Mosa / MosaShared on top of it.

Every model is built from an architecture dict (:func:`architecture`), the same dict an export's
``model.json`` holds, so :func:`shared.load_export` rebuilds it through :func:`build_from_architecture`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Mapping

from torch import nn

from shared import ConfigError, register_model
from shared.export import register_input_reader
from alzheimer_mosa.config import Config
from alzheimer_mosa.mosa_net import Mosa
from alzheimer_mosa.mosa_net_simple import MosaShared
from alzheimer_mosa.resnet import ResNet3d, build_resnet3d, load_pretrained_resnet

PROJECT = "alzheimer_mosa"


def architecture(cfg: Config, kind: Literal["resnet3d", "mosa"]) -> dict[str, Any]:
    """What a model is, without its weights: ``resnet3d``, ``mosa`` or ``mosa_shared`` and its sizes."""
    b, m = cfg.backbone, cfg.mosa
    arch: dict[str, Any] = {
        "model": kind if kind == "resnet3d" else ("mosa_shared" if m.use_shared_transformer else "mosa"),
        "backbone": {"model_type": b.model_type, "in_channels": b.in_channels, "num_classes": b.num_classes,
                     "width": b.width},
    }
    if kind != "resnet3d":
        arch["input_size"] = list(cfg.data.target_size)
        arch["mosa"] = {"embed_dim": m.embed_dim, "depth": m.depth, "num_heads": m.num_heads, "mlp_ratio": m.mlp_ratio,
                        "qkv_bias": m.qkv_bias, "drop_rate": m.drop_rate, "attn_drop_rate": m.attn_drop_rate}
    return arch


@register_model(PROJECT)
def build_from_architecture(arch: Mapping[str, Any]) -> nn.Module:
    """An :func:`architecture` dict -> the freshly initialised model."""
    b = arch["backbone"]
    backbone = build_resnet3d(b["model_type"], b["in_channels"], b["num_classes"], width=b["width"])
    if arch["model"] == "resnet3d":
        return backbone
    model_cls = {"mosa": Mosa, "mosa_shared": MosaShared}[arch["model"]]
    return model_cls(backbone, tuple(arch["input_size"]), b["num_classes"], **arch["mosa"])


def build_backbone(cfg: Config) -> ResNet3d:
    """The configured 3D ResNet, with ``pretrained_path`` weights when ``pretrained`` is on."""
    backbone = build_from_architecture(architecture(cfg, "resnet3d"))
    if cfg.backbone.pretrained:
        load_pretrained_resnet(backbone, Path(cfg.backbone.pretrained_path))
    return backbone


def build_mosa(cfg: Config) -> nn.Module:
    """Mosa (a transformer per scale) or MosaShared (one shared transformer), sized for ``target_size``."""
    model = build_from_architecture(architecture(cfg, "mosa"))
    if cfg.backbone.pretrained:
        load_pretrained_resnet(model.backbone, Path(cfg.backbone.pretrained_path))
    return model


def model_kind(model: nn.Module) -> Literal["resnet3d", "mosa"]:
    return "resnet3d" if isinstance(model, ResNet3d) else "mosa"


def check_training_batch(cfg: Config, processes: int) -> None:
    """Refuse a training batch of one volume per device when the 3D ResNet's BatchNorm cannot train on it:
    it normalises each channel over the batch and the voxels of its map, and the last stage's map is a single
    voxel unless an axis of ``data.target_size`` exceeds 32 (PyTorch would stop at the first step)."""
    voxels = math.prod(ResNet3d.feature_map_sizes(tuple(cfg.data.target_size))[-1])
    divisor = processes * cfg.train.grad_accum_steps  # the global batch is split over both
    if voxels == 1 and cfg.train.batch_size < 2 * divisor:
        raise ConfigError(
            f"train.batch_size must be >= {2 * divisor} here, got {cfg.train.batch_size}: split over {processes} "
            f"process(es) x {cfg.train.grad_accum_steps} accumulation step(s) that is 1 volume per step, and the 3D "
            f"ResNet's BatchNorm needs at least 2 in training when its last stage is one voxel (data.target_size "
            f"{cfg.data.target_size}, every axis <= 32); raise train.batch_size or a data.target_size axis above 32")


@register_input_reader(PROJECT)
def export_input_reader(info: Mapping[str, Any]):
    """path -> the (C, D, H, W) input of an exported model: the evaluation pipeline (orientation, foreground
    crop, sizing, per-volume intensity normalisation) rebuilt from its ``model.json``."""
    import torchio as tio

    from alzheimer_mosa.augment import IMAGE_KEY, build_transform
    from alzheimer_mosa.config import AugmentConfig, DataConfig
    from alzheimer_mosa.data_loader import read_nifti

    prep = info["preprocessing"]
    extra, intensity = prep["extra"], prep["extra"]["intensity"]
    data = DataConfig(target_size=list(prep["size"]), size_mode=extra["size_mode"],
                      foreground_crop=extra["foreground_crop"]["enabled"],
                      foreground_margin=extra["foreground_crop"]["margin"], normalization=intensity["method"],
                      percentile_range=list(intensity.get("range", [0.5, 99.5])))
    transform = build_transform(data, AugmentConfig(), train=False)

    def read(path):
        subject = tio.Subject({IMAGE_KEY: tio.ScalarImage(path, reader=read_nifti)})
        return transform(subject)[IMAGE_KEY].data.float()
    return read
