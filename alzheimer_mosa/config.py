"""All settings of a run, as typed dataclasses, read through the one command line of every project.

    python alzheimer_mosa/train_mosa.py [--config run.yaml] [--train.lr 5e-5] [--set backbone.model_type=resnet50_3d]

``--help`` lists every key with its default and the comment beside its field below. The training loop's
knobs are the shared :class:`shared.TrainConfig` under ``train``; the source document's spellings
(``training.learning_rate``, ``training.resume``, ...) still work through :data:`SOURCE_ALIASES`.
Every field is read somewhere (``tests/test_config_fields.py`` checks that changing it changes something).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence, TypeVar

from shared import ConfigError, EarlyStoppingConfig, TrainConfig, parse_cli

C = TypeVar("C", bound="Config")

#: The source document's (and this project's earlier) spellings -> the one name of each knob. They work in
#: ``--config`` files and on the command line; giving both spellings of one key is an error.
SOURCE_ALIASES = {
    "training.optimizer": "train.optimizer",
    "training.learning_rate": "train.lr",
    "training.min_lr": "train.min_lr",
    "training.weight_decay": "train.weight_decay",
    "training.momentum": "train.momentum",
    "training.lr_scheduler": "train.scheduler",
    "training.step_size": "train.decay_epochs",
    "training.lr_decay": "train.decay_rate",
    "training.warmup_epochs": "train.warmup_epochs",
    "training.epochs": "train.epochs",
    "training.grad_clip": "train.grad_clip",
    "training.monitor": "train.early_stopping.monitor",
    "training.monitor_mode": "train.early_stopping.mode",
    "training.early_stopping_patience": "train.early_stopping.patience",
    "training.mixed_precision": "train.mixed_precision",
    "training.seed": "train.seed",
    "training.resume": "train.resume_checkpoint",
    "training.save_freq": "train.save_every",
    "training.log_dir": "train.output_dir",
    "training.checkpoint_dir": "logging.checkpoint_dir",
    "training.loss_fn": "loss.name",
    "training.alpha": "loss.alpha",
    "training.gamma": "loss.gamma",
    "training.label_smoothing": "loss.label_smoothing",
    "data.batch_size": "train.batch_size",
    "data.num_workers": "train.num_workers",
    "logging.progress_bar": "train.progress_bar",
}

OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class DataConfig:
    data_root: str = ""  # folder of {train,val[,test]}/<class>/*.nii[.gz] or a CSV manifest path,label[,subject,split]; empty = synthetic demo set
    demo_dir: str = "data/demo"  # where the demo set is written (and reused) when data_root is empty
    target_size: list[int] = field(default_factory=lambda: [32, 32, 32])  # volume size fed to the network, array axes of the RAS+ image
    size_mode: Literal["resize", "crop_pad"] = "resize"  # resample to target_size, or centre crop/pad to it
    foreground_crop: bool = True  # crop to the bounding box of voxels above the volume minimum first
    foreground_margin: int = 2  # voxels kept around that bounding box
    normalization: Literal["zscore", "percentile"] = "zscore"  # per-volume intensity normalisation
    percentile_range: list[float] = field(default_factory=lambda: [0.5, 99.5])  # percentile: this range -> [0, 1]
    class_names: list[str] = field(default_factory=lambda: ["CN", "AD"])  # label order of logits and reports
    positive_class: str = "AD"  # the class of binary AUC, ROC/PR, sensitivity and specificity
    cache_dir: str = ""  # preprocessed volumes (prepare_cache.py), used when built for these settings
    val_fraction: float = 0.15  # manifest without a split column: share of subjects for validation
    test_fraction: float = 0.15  # manifest without a split column: share of subjects for test

    @property
    def positive_index(self) -> int:
        return self.class_names.index(self.positive_class)


@dataclass
class AugmentConfig:
    """Training-time torchio augmentation; a probability of 0 switches that transform off."""

    flip_prob: float = 0.5  # probability of a random flip
    flip_axes: list[int] = field(default_factory=lambda: [0])  # axes a flip may use; 0 = left-right in RAS+
    affine_prob: float = 0.5  # probability of a random affine transform
    affine_scale: float = 0.1  # scaling factor drawn from [1 - s, 1 + s]
    affine_degrees: float = 10.0  # largest rotation, degrees
    affine_translation: float = 4.0  # largest translation, mm
    noise_prob: float = 0.25  # probability of Gaussian noise (added after normalisation)
    noise_std: float = 0.1  # largest noise std, in normalised intensity units
    bias_field_prob: float = 0.25  # probability of an MRI bias field
    bias_field_coefficients: float = 0.3  # largest bias-field polynomial coefficient
    gamma_prob: float = 0.25  # probability of a random gamma
    log_gamma: float = 0.2  # gamma drawn as exp(U(-g, g))


@dataclass
class BackboneConfig:
    model_type: Literal["resnet10_3d", "resnet18_3d", "resnet34_3d", "resnet50_3d"] = "resnet18_3d"  # 3D ResNet depth
    pretrained: bool = False  # load pretrained_path (MedicalNet or pretrain_resnet.py output)
    pretrained_path: str = ""  # weights file for pretrained: true
    freeze_epochs: int = 0  # Mosa: keep the loaded backbone frozen for the first N epochs
    width: int = 64  # stem and stage-1 channels, doubled per stage; 64 = standard (MedicalNet weights need it)
    in_channels: int = 1  # channels of the input volume
    num_classes: int = 2  # must equal the number of data.class_names


@dataclass
class MosaConfig:
    use_shared_transformer: bool = False  # true: MosaShared (one transformer over all scales)
    embed_dim: int = 128  # token width of every scale
    depth: int = 2  # transformer blocks per scale
    num_heads: int = 4  # attention heads; must divide embed_dim
    mlp_ratio: float = 4.0  # hidden width of the transformer MLP, times embed_dim
    qkv_bias: bool = True  # bias in the query/key/value projection
    drop_rate: float = 0.1  # dropout in the transformer and the head
    attn_drop_rate: float = 0.0  # dropout of the attention weights


@dataclass
class LossConfig:
    name: Literal["cross_entropy", "focal"] = "cross_entropy"  # training and validation loss
    alpha: list[float] = field(default_factory=list)  # focal: one weight per class (empty = none)
    gamma: float = 2.0  # focal focusing parameter
    label_smoothing: float = 0.0  # label smoothing of either loss


@dataclass
class LoggingConfig:
    checkpoint_dir: str = "checkpoints/mosa"  # checkpoint.pth.tar and model_best.pth.tar
    batch_metrics: bool = True  # Train/Batch/* scalars every optimizer step
    hist_interval: int = 5  # epochs between Params/* and Grads/* histograms; 0 = never
    export_per_class: bool = True  # best_val/test_per_class_metrics.json


def default_train() -> TrainConfig:
    """The shared training section with this project's defaults. ``output_dir`` is the folder of the
    time-stamped run folders; the engine's own scalars are off (the callbacks write the ``Train/``,
    ``Val/``, ``Test/`` tags); ``model_best.pth.tar`` holds the full resume state, as the document's did."""
    return TrainConfig(output_dir="logs", epochs=5, batch_size=4, num_workers=2, lr=3e-4, weight_decay=0.01,
                       decay_epochs=10.0, ema=False, early_stopping=EarlyStoppingConfig(monitor="val/loss", mode="min"),
                       log_scalars=False, full_best_checkpoint=True)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)  # volumes, preprocessing, classes
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training augmentation
    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # 3D ResNet
    mosa: MosaConfig = field(default_factory=MosaConfig)  # multi-scale transformer
    loss: LossConfig = field(default_factory=LossConfig)  # loss function
    train: TrainConfig = field(default_factory=default_train)  # the shared training loop (shared.TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # checkpoints and TensorBoard content


@dataclass
class PretrainConfig(Config):
    """``pretrain_resnet.py``: the same settings, but its own checkpoint folder."""

    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(checkpoint_dir="checkpoints/resnet3d"))  # checkpoints and TensorBoard content


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
    if cfg.loss.alpha and len(cfg.loss.alpha) != backbone.num_classes:
        raise ConfigError(f"loss.alpha has {len(cfg.loss.alpha)} values for {backbone.num_classes} classes")
    if cfg.mosa.embed_dim % cfg.mosa.num_heads:
        raise ConfigError(f"mosa.embed_dim={cfg.mosa.embed_dim} is not divisible by mosa.num_heads={cfg.mosa.num_heads}")
    if backbone.pretrained and not backbone.pretrained_path:
        raise ConfigError("backbone.pretrained=true needs backbone.pretrained_path (MedicalNet weights or a "
                          "pretrain_resnet.py checkpoint); nothing can be downloaded automatically")
    if cfg.train.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer: {cfg.train.optimizer!r} is not one of {list(OPTIMIZERS)}")
    if cfg.train.save_every < 1:
        raise ConfigError(f"train.save_every must be >= 1, got {cfg.train.save_every}")
    return cfg


def config_from_cli(cls: type[C], argv: Sequence[str] | None = None, description: str = "") -> C:
    """``[--config file.yaml] [--section.key value | --set section.key=value ...]`` -> checked config."""
    return validate_config(parse_cli(cls, argv, description=description or __doc__, aliases=SOURCE_ALIASES))
