"""All settings of a run, as typed dataclasses (YAML + command-line overrides through ``shared``).

``python alzheimer_mosa/train_mosa.py --training.learning_rate 5e-5 --backbone.model_type resnet50_3d``
or ``--config my.yaml``; an unknown key is an error that lists the valid ones. Every field below is
read somewhere (``tests/test_config_fields.py`` checks that changing it changes something).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal, Sequence, TypeVar

import yaml

from shared import ConfigError, config_to_dict, load_config

C = TypeVar("C", bound="Config")


@dataclass
class DataConfig:
    # Folder with {train,val[,test]}/<class>/*.nii[.gz], or a CSV manifest path,label[,subject,split].
    # Empty: a small synthetic demo set is generated in ``demo_dir`` (reused when already there).
    data_root: str = ""
    demo_dir: str = "data/demo"
    batch_size: int = 4
    num_workers: int = 2
    # Volume size fed to the network, in array-axis order of the canonical (RAS+) image.
    target_size: list[int] = field(default_factory=lambda: [32, 32, 32])
    size_mode: Literal["resize", "crop_pad"] = "resize"  # resample to target_size, or centre crop/pad
    foreground_crop: bool = True  # crop to the bounding box of voxels above the volume minimum first
    foreground_margin: int = 2  # voxels kept around that bounding box
    normalization: Literal["zscore", "percentile"] = "zscore"
    percentile_range: list[float] = field(default_factory=lambda: [0.5, 99.5])  # -> [0, 1]
    class_names: list[str] = field(default_factory=lambda: ["CN", "AD"])  # label order
    positive_class: str = "AD"  # binary AUC, ROC/PR, sensitivity/specificity are for this class
    # Preprocessed volumes (prepare_cache.py): used when built for these settings, else the NIfTI files.
    cache_dir: str = ""
    # Manifest without a split column: fractions of subjects held out (grouped by subject).
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    @property
    def positive_index(self) -> int:
        return self.class_names.index(self.positive_class)


@dataclass
class AugmentConfig:
    """Training-time torchio augmentation; a probability of 0 switches that transform off."""

    flip_prob: float = 0.5
    flip_axes: list[int] = field(default_factory=lambda: [0])  # 0 = left-right in RAS+
    affine_prob: float = 0.5
    affine_scale: float = 0.1  # scaling factor drawn from [1 - s, 1 + s]
    affine_degrees: float = 10.0
    affine_translation: float = 4.0  # mm
    noise_prob: float = 0.25
    noise_std: float = 0.1  # in normalised intensity units
    bias_field_prob: float = 0.25
    bias_field_coefficients: float = 0.3
    gamma_prob: float = 0.25
    log_gamma: float = 0.2  # gamma drawn as exp(U(-g, g))


@dataclass
class BackboneConfig:
    model_type: Literal["resnet10_3d", "resnet18_3d", "resnet34_3d", "resnet50_3d"] = "resnet18_3d"
    pretrained: bool = False  # load ``pretrained_path`` (MedicalNet or pretrain_resnet.py output)
    pretrained_path: str = ""
    freeze_epochs: int = 0  # Mosa: keep the loaded backbone frozen for the first N epochs
    width: int = 64  # stem and stage-1 channels, doubled per stage; 64 = standard (MedicalNet weights need it)
    in_channels: int = 1
    num_classes: int = 2


@dataclass
class MosaConfig:
    use_shared_transformer: bool = False  # True: MosaShared (one transformer over all scales)
    embed_dim: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.1
    attn_drop_rate: float = 0.0


@dataclass
class TrainingConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    learning_rate: float = 3e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.01
    momentum: float = 0.9  # sgd only
    lr_scheduler: Literal["cosine", "step", "plateau"] = "cosine"
    step_size: float = 10.0  # epochs between step decays; plateau patience
    lr_decay: float = 0.1  # step/plateau decay factor
    warmup_epochs: float = 1.0
    epochs: int = 5
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    loss_fn: Literal["cross_entropy", "focal"] = "cross_entropy"
    alpha: list[float] = field(default_factory=list)  # focal: per-class weights (empty = none)
    gamma: float = 2.0  # focal focusing parameter
    label_smoothing: float = 0.0
    # Metric that picks model_best.pth.tar (any Val metric: val/auc, val/accuracy, ...). The loss is
    # the default because small validation sets tie on AUC and accuracy and then keep an early epoch.
    monitor: str = "val/loss"
    monitor_mode: Literal["max", "min"] = "min"
    early_stopping_patience: int = 0  # epochs without improvement of ``monitor``; 0 = off
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 42
    resume: str = ""  # path of a checkpoint.pth.tar to continue from
    checkpoint_dir: str = "checkpoints/mosa"
    log_dir: str = "logs"  # each run logs to <log_dir>/<run name>_<time>; a resume reuses it
    save_freq: int = 1  # epochs between checkpoint.pth.tar writes (the last epoch always writes)


@dataclass
class LoggingConfig:
    batch_metrics: bool = True  # Train/Batch/* scalars every optimizer step
    hist_interval: int = 5  # epochs between Params/* and Grads/* histograms; 0 = never
    export_per_class: bool = True  # best_val/test_per_class_metrics.json
    progress_bar: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    mosa: MosaConfig = field(default_factory=MosaConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


@dataclass
class PretrainConfig(Config):
    """``pretrain_resnet.py``: the same settings, but its own checkpoint folder."""

    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(checkpoint_dir="checkpoints/resnet3d"))


def validate_config(cfg: Config) -> Config:
    """Cross-field checks that a type annotation cannot express; returns ``cfg`` unchanged."""
    data, backbone = cfg.data, cfg.backbone
    if len(data.target_size) != 3 or min(data.target_size) < 8:
        raise ConfigError(f"data.target_size must be three sizes >= 8, got {data.target_size}")
    if len(set(data.class_names)) != len(data.class_names) or len(data.class_names) < 2:
        raise ConfigError(f"data.class_names must name at least two distinct classes, got {data.class_names}")
    if backbone.num_classes != len(data.class_names):
        raise ConfigError(f"backbone.num_classes={backbone.num_classes} but data.class_names has "
                          f"{len(data.class_names)} entries {data.class_names}")
    if data.positive_class not in data.class_names:
        raise ConfigError(f"data.positive_class={data.positive_class!r} is not in data.class_names {data.class_names}")
    if len(data.percentile_range) != 2 or not 0 <= data.percentile_range[0] < data.percentile_range[1] <= 100:
        raise ConfigError(f"data.percentile_range must be [low, high] within 0..100, got {data.percentile_range}")
    alpha = cfg.training.alpha
    if alpha and len(alpha) != backbone.num_classes:
        raise ConfigError(f"training.alpha has {len(alpha)} values for {backbone.num_classes} classes")
    if cfg.mosa.embed_dim % cfg.mosa.num_heads:
        raise ConfigError(f"mosa.embed_dim={cfg.mosa.embed_dim} is not divisible by mosa.num_heads={cfg.mosa.num_heads}")
    if backbone.pretrained and not backbone.pretrained_path:
        raise ConfigError("backbone.pretrained=true needs backbone.pretrained_path (MedicalNet weights or a "
                          "pretrain_resnet.py checkpoint); nothing can be downloaded automatically")
    if cfg.training.save_freq < 1:
        raise ConfigError(f"training.save_freq must be >= 1, got {cfg.training.save_freq}")
    return cfg


def config_from_cli(cls: type[C], argv: Sequence[str]) -> C:
    """``[--config file.yaml] [--section.key value | --set section.key=value ...]`` -> checked config."""
    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        print(f"options: [--config file.yaml] [--section.key value ...]; defaults:\n"
              f"{yaml.safe_dump(config_to_dict(cls()), sort_keys=False)}")
        sys.exit(0)
    path = None
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise ConfigError("--config needs a YAML file path")
        path = argv[at + 1]
        del argv[at:at + 2]
    return validate_config(load_config(cls, path, argv))
