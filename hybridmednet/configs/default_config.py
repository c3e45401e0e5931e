"""HybridMedNet settings: the guide's ``Config`` with dicts MODEL, TRAIN, DATA, LOSS, CHECKPOINT, LOGGING.

Each dict is a typed dataclass from the shared config system, so ``config.MODEL['backbone'] = 'swin_tiny'``
works as in the guide, while an unknown key (a typo) raises instead of being silently ignored, and
``Config.load(yaml_path, argv)`` applies a YAML file and ``--set MODEL.backbone=swin_tiny`` overrides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Iterator, Literal, Optional, Sequence, Union

from shared import ConfigError, load_config

#: Default grouping of the 14 ChestX-ray14 findings into 3 coarse classes (``num_coarse_classes``).
#: lung_opacity: findings seen as opacities in the lung fields; pleural: findings of the pleural
#: space; cardio_structural: heart size, chronic airway/interstitial change and hernia.
DEFAULT_COARSE_GROUPS = {
    "lung_opacity": ["Atelectasis", "Consolidation", "Edema", "Infiltration", "Mass", "Nodule", "Pneumonia"],
    "pleural": ["Effusion", "Pleural_Thickening", "Pneumothorax"],
    "cardio_structural": ["Cardiomegaly", "Emphysema", "Fibrosis", "Hernia"],
}


class ConfigSection:
    """Dict-style access to a dataclass section: ``section['key']`` reads, assignment validates the key."""

    __slots__ = ()

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def _check_key(self, key: str) -> None:
        if key not in self:
            raise KeyError(f"unknown {type(self).__name__} key {key!r}; valid keys: {self.keys()}")

    def __getitem__(self, key: str):
        self._check_key(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value) -> None:
        self._check_key(key)
        setattr(self, key, value)


@dataclass(slots=True)
class ModelSection(ConfigSection):
    backbone: str = "convnext_base"  # see models/backbones.py BACKBONES
    pretrained: bool = True  # ImageNet weights from the timm hub (timm backbones only)
    num_classes: int = 14
    hierarchical: bool = False  # coarse head (finding groups) + fine head (findings)
    num_coarse_classes: int = 3  # must equal len(coarse_groups)
    coarse_groups: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_COARSE_GROUPS.items()})
    use_modern_attention: bool = True  # per-scale multi-head self-attention; false = CBAM
    use_cross_scale_attention: bool = True  # every scale attends to the other scales (on top of either)
    num_heads: int = 8
    attention_pool_size: int = 7  # keys/values pooled to at most this many cells per side
    fpn_channels: int = 256
    fusion_channels: int = 512
    dropout: float = 0.5
    head_norm: Literal["batch", "layer"] = "batch"  # layer: batch-independent (exact gradient accumulation)

    def __post_init__(self):
        if self.num_coarse_classes != len(self.coarse_groups):
            raise ConfigError(f"MODEL.num_coarse_classes={self.num_coarse_classes} but MODEL.coarse_groups "
                              f"defines {len(self.coarse_groups)} groups: {list(self.coarse_groups)}")
        if self.fpn_channels % self.num_heads:
            raise ConfigError(f"MODEL.fpn_channels={self.fpn_channels} must be divisible by "
                              f"MODEL.num_heads={self.num_heads}")


@dataclass(slots=True)
class TrainSection(ConfigSection):
    batch_size: int = 32  # global batch (all GPUs and accumulation steps together)
    epochs: int = 50
    learning_rate: float = 1e-4
    min_lr: float = 1e-6  # floor of the cosine/step schedule
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # any timm optimizer name
    lr_scheduler: Literal["cosine", "step", "plateau", "none"] = "cosine"
    warmup_epochs: float = 5.0  # linear warmup from 1% of learning_rate, stepped per update
    gradient_accumulation_steps: int = 1
    mixed_precision: bool = True  # autocast in amp_dtype
    amp_dtype: Literal["bf16", "fp16"] = "bf16"  # fp16 needs a CUDA GPU (falls back to bf16 on CPU)
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    early_stopping_patience: int = 10  # epochs without improvement; 0 = never stop early
    early_stopping_monitor: str = "val/macro_auroc"
    early_stopping_mode: Literal["max", "min"] = "max"
    ema: bool = False  # keep an exponential moving average of the weights (evaluated as val_ema/*)
    ema_decay: float = 0.9998
    seed: int = 42


@dataclass(slots=True)
class DataSection(ConfigSection):
    data_dir: str = "data/chestxray14/images"  # searched recursively (NIH's images_0xx/images/ layout)
    labels_file: str = "data/chestxray14/Data_Entry_2017.csv"  # NIH CSV or one 0/1 column per finding
    demo: bool = False  # generate a synthetic demo set under CHECKPOINT.save_dir and train on it
    demo_num_images: int = 600
    image_size: int = 224
    num_workers: int = 4
    train_split: float = 0.7  # fractions of patients (no patient is in two parts)
    val_split: float = 0.15
    test_split: float = 0.15
    train_val_list: str = ""  # NIH's train_val_list.txt / test_list.txt: official test set
    test_list: str = ""
    on_bad_image: Literal["error", "skip"] = "error"
    # Name kept from the guide; the strong augmentation is torchvision v2 (RandAugment + random
    # erasing on top of the standard crop/rotation/intensity jitter), not albumentations.
    use_albumentations: bool = False

    def __post_init__(self):
        splits = (self.train_split, self.val_split, self.test_split)
        if not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
            raise ConfigError(f"DATA.train_split + val_split + test_split must be 1, got {splits}")


@dataclass(slots=True)
class LossSection(ConfigSection):
    type: Literal["bce", "focal", "asl"] = "bce"
    # None | "auto" (negatives/positives per finding on the training split) | 14 numbers. BCE only.
    pos_weight: Optional[Union[str, list[float]]] = None
    coarse_weight: float = 0.4  # hierarchical: BCE of the coarse head against the grouped labels
    fine_weight: float = 0.6  # hierarchical: the finding loss (the flat head uses it unweighted)
    consistency_weight: float = 0.2  # hierarchical: coarse probabilities vs grouped fine probabilities

    def __post_init__(self):
        if isinstance(self.pos_weight, str) and self.pos_weight != "auto":
            raise ConfigError(f"LOSS.pos_weight must be null, 'auto' or a list of numbers, got {self.pos_weight!r}")
        if self.pos_weight is not None and self.type != "bce":
            raise ConfigError(f"LOSS.pos_weight applies to the bce loss only, not LOSS.type={self.type!r}")


@dataclass(slots=True)
class CheckpointSection(ConfigSection):
    save_dir: str = "runs/hybridmednet"  # run folder: checkpoints/, logs/, config.yaml, history.json
    save_freq: int = 5  # epochs between checkpoint_latest.pth writes; the best model is saved whenever it improves
    resume: bool = False
    resume_checkpoint: str = ""  # default: <save_dir>/checkpoints/checkpoint_latest.pth


@dataclass(slots=True)
class LoggingSection(ConfigSection):
    log_dir: str = ""  # TensorBoard folder; empty = <save_dir>/logs
    tensorboard: bool = True
    print_freq: int = 10  # optimizer steps between train-loss log entries


@dataclass(slots=True)
class Config:
    """All settings. ``Config()`` gives the defaults; ``Config.load`` adds a YAML file and overrides."""

    MODEL: ModelSection = field(default_factory=ModelSection)
    TRAIN: TrainSection = field(default_factory=TrainSection)
    DATA: DataSection = field(default_factory=DataSection)
    LOSS: LossSection = field(default_factory=LossSection)
    CHECKPOINT: CheckpointSection = field(default_factory=CheckpointSection)
    LOGGING: LoggingSection = field(default_factory=LoggingSection)

    @classmethod
    def load(cls, path: str | None = None, argv: Sequence[str] = ()) -> "Config":
        """Defaults <- YAML file <- ``--set SECTION.key=value`` / ``--SECTION.key value`` overrides."""
        return load_config(cls, path, argv)
