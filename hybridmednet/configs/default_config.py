"""HybridMedNet settings: the guide's ``Config`` with dicts MODEL, DATA, LOSS, and the shared engine's ``train``.

MODEL, DATA and LOSS are typed dataclasses from the shared config system, so ``config.MODEL['backbone'] =
'swin_tiny'`` works as in the guide, while an unknown key (a typo) raises instead of being silently ignored.
The guide's TRAIN dict is the shared ``TrainConfig`` (``config.train``): its keys keep working in YAML files
and on the command line through :data:`SOURCE_ALIASES` (``TRAIN.learning_rate`` is ``train.lr``).
``Config.load(yaml_path, argv)`` applies a YAML file and ``--set MODEL.backbone=swin_tiny`` overrides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Iterator, Literal, Optional, Sequence, Union

from shared import ConfigError, EarlyStoppingConfig, TrainConfig, check_image_size, load_config
from hybridmednet.models.backbones import EXPECTED_STRIDES

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
    num_classes: int = 14  # outputs of the finding head (the 14 ChestX-ray14 findings)
    hierarchical: bool = False  # coarse head (finding groups) + fine head (findings)
    num_coarse_classes: int = 3  # must equal len(coarse_groups)
    coarse_groups: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_COARSE_GROUPS.items()})  # group -> findings
    use_modern_attention: bool = True  # per-scale multi-head self-attention; false = CBAM
    use_cross_scale_attention: bool = True  # every scale attends to the other scales (on top of either)
    num_heads: int = 8  # attention heads (must divide fpn_channels)
    attention_pool_size: int = 7  # keys/values pooled to at most this many cells per side
    fpn_channels: int = 256  # width of every FPN level
    fusion_channels: int = 512  # width of the fused stride-4 map
    dropout: float = 0.5  # in the head's shared MLP (half of it inside each finding head)
    head_norm: Literal["batch", "layer"] = "batch"  # layer: batch-independent (exact gradient accumulation)

    def __post_init__(self):
        if self.num_coarse_classes != len(self.coarse_groups):
            raise ConfigError(f"MODEL.num_coarse_classes={self.num_coarse_classes} but MODEL.coarse_groups "
                              f"defines {len(self.coarse_groups)} groups: {list(self.coarse_groups)}")
        if self.fpn_channels % self.num_heads:
            raise ConfigError(f"MODEL.fpn_channels={self.fpn_channels} must be divisible by "
                              f"MODEL.num_heads={self.num_heads}")


@dataclass(slots=True)
class DataSection(ConfigSection):
    data_dir: str = "data/chestxray14/images"  # searched recursively (NIH's images_0xx/images/ layout)
    labels_file: str = "data/chestxray14/Data_Entry_2017.csv"  # NIH CSV or one 0/1 column per finding
    demo: bool = False  # generate a synthetic demo set under train.output_dir/demo_data and train on it
    demo_num_images: int = 600  # images in the synthetic demo set (3 per patient)
    image_size: int = 224  # training and evaluation resolution (square), pixels
    train_split: float = 0.7  # fraction of patients for training (no patient is in two parts)
    val_split: float = 0.15  # fraction of patients for validation
    test_split: float = 0.15  # fraction of patients for testing
    train_val_list: str = ""  # NIH's train_val_list.txt; with test_list: NIH's official test set
    test_list: str = ""  # NIH's test_list.txt (give both lists or neither)
    on_bad_image: Literal["error", "skip"] = "error"  # skip: decode every image once, drop unreadable ones
    # Name kept from the guide; the strong augmentation is torchvision v2 (RandAugment + random
    # erasing on top of the standard crop/rotation/intensity jitter), not albumentations.
    use_albumentations: bool = False  # strong augmentation: + RandAugment and random erasing (torchvision v2)

    def __post_init__(self):
        splits = (self.train_split, self.val_split, self.test_split)
        if not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
            raise ConfigError(f"DATA.train_split + val_split + test_split must be 1, got {splits}")


@dataclass(slots=True)
class LossSection(ConfigSection):
    type: Literal["bce", "focal", "asl"] = "bce"  # finding loss: BCE, sigmoid focal or asymmetric loss
    pos_weight: Optional[Union[str, list[float]]] = None  # BCE only: null, auto (negatives/positives per finding) or 14 numbers
    coarse_weight: float = 0.4  # hierarchical: BCE of the coarse head against the grouped labels
    fine_weight: float = 0.6  # hierarchical: the finding loss (the flat head uses it unweighted)
    consistency_weight: float = 0.2  # hierarchical: coarse probabilities vs grouped fine probabilities

    def __post_init__(self):
        if isinstance(self.pos_weight, str) and self.pos_weight != "auto":
            raise ConfigError(f"LOSS.pos_weight must be null, 'auto' or a list of numbers, got {self.pos_weight!r}")
        if self.pos_weight is not None and self.type != "bce":
            raise ConfigError(f"LOSS.pos_weight applies to the bce loss only, not LOSS.type={self.type!r}")


def default_train() -> TrainConfig:
    """The guide's TRAIN defaults on the shared engine's settings."""
    return TrainConfig(output_dir="runs/hybridmednet", epochs=50, batch_size=32, lr=1e-4, min_lr=1e-6,
                       weight_decay=1e-4, warmup_epochs=5.0, ema=False, log_every=10,
                       early_stopping=EarlyStoppingConfig(monitor="val/macro_auroc", mode="max", patience=10))


#: The guide's spellings, accepted in YAML files and on the command line. Its TRAIN dict is the shared
#: ``train`` section (TRAIN.epochs is train.epochs); the keys it names differently are renamed after that.
SOURCE_ALIASES = {
    "TRAIN": "train",
    "train.learning_rate": "train.lr",
    "train.lr_scheduler": "train.scheduler",
    "train.gradient_accumulation_steps": "train.grad_accum_steps",
    "train.amp_dtype": "train.mixed_precision",
    "train.early_stopping_patience": "train.early_stopping.patience",
    "train.early_stopping_monitor": "train.early_stopping.monitor",
    "train.early_stopping_mode": "train.early_stopping.mode",
    "DATA.num_workers": "train.num_workers",
}


@dataclass(slots=True)
class Config:
    """All settings. ``Config()`` gives the defaults; ``Config.load`` adds a YAML file and overrides."""

    MODEL: ModelSection = field(default_factory=ModelSection)  # the network: HybridMedNet(config) reads only this
    DATA: DataSection = field(default_factory=DataSection)  # where the X-rays are, the split, augmentation
    LOSS: LossSection = field(default_factory=LossSection)  # the finding loss and the hierarchical weights
    train: TrainConfig = field(default_factory=default_train)  # the shared engine (the guide's TRAIN keys)

    def __post_init__(self):
        # every backbone ends its feature pyramid at stride EXPECTED_STRIDES[-1] (checked when it is built)
        check_image_size(self.DATA["image_size"], EXPECTED_STRIDES[-1], "DATA.image_size",
                         f"HybridMedNet (MODEL.backbone={self.MODEL['backbone']})")

    @classmethod
    def load(cls, path: str | None = None, argv: Sequence[str] = ()) -> "Config":
        """Defaults <- YAML file <- ``--set SECTION.key=value`` / ``--SECTION.key value`` overrides, in the guide's
        spellings (SOURCE_ALIASES) or the canonical ones."""
        return load_config(cls, path, argv, aliases=SOURCE_ALIASES)
