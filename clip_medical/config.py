"""The settings of ``train_clip.py`` and the guide's other spellings of them.

One config path: the shared engine's ``TrainConfig`` is embedded as ``train`` (one name per knob:
``train.lr``, ``train.epochs``, ...), and the guide's flags and JSON keys (``--learning-rate``,
``--no-amp``, ``"use_amp": false`` ...) reach those keys through the single table :data:`ALIASES`.
``python clip_medical/train_clip.py --help`` lists every key with its default and the meaning written
beside it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from shared import (ConfigError, EarlyStoppingConfig, SplitConfig, TrainConfig, check_image_size, config_from_dict,
                    config_to_dict, read_json)
from shared.config import UNSET, switch_value
from clip_medical.models import IMAGE_ENCODERS, image_encoder_stride

ImageEncoderName = Literal[tuple(IMAGE_ENCODERS)]  # the guide's encoder names (see models/image_encoders.py)

# The guide's command-line flags (--learning-rate = learning_rate) and JSON keys -> config keys. "key=value"
# entries are true/false switches that set a value (--no-amp); "key=on|off" ones set one of two values
# ("use_amp": false is --no-amp).
ALIASES: dict[str, str] = {
    "output_dir": "train.output_dir",
    "image_encoder": "image_encoder_name",
    "text_encoder": "text_encoder_name",
    "batch_size": "train.batch_size",
    "epochs": "train.epochs",
    "learning_rate": "train.lr",
    "weight_decay": "train.weight_decay",
    "num_workers": "train.num_workers",
    "random_state": "train.seed",
    "resume_from": "train.resume_checkpoint",
    "save_best": "train.save_best",
    "early_stopping_patience": "train.early_stopping.patience",
    "early_stopping_min_delta": "train.early_stopping.min_delta",
    "early_stopping_monitor": "train.early_stopping.monitor",
    "config_file": "multi_config_file",
    "no_amp": "train.mixed_precision=no",
    "no_save_best": "train.save_best=false",
    "no_pretrained": "pretrained=false",
    "use_amp": "train.mixed_precision=auto|no",
}

# The guide's early-stopping monitors -> the engine's metric key and direction. Accuracy is in percent,
# as in the guide, so "--early-stopping-min-delta 0.1" means 0.1 percentage points.
GUIDE_MONITORS = {"val_acc": ("val/acc", "max"), "val_loss": ("val/loss", "min")}


def guide_training_defaults() -> TrainConfig:
    """The guide's defaults (100 epochs, batch 32, AdamW lr 1e-4, weight decay 0.01), no EMA, best = top val acc."""
    return TrainConfig(output_dir="", epochs=100, batch_size=32, lr=1e-4, weight_decay=0.01, ema=False,
                       early_stopping=EarlyStoppingConfig(monitor="val/acc", mode="max"))


@dataclass
class ClipTrainConfig:
    data_dir: str = ""  # class-folder root: <data_dir>/<class>/<images> (required)
    test_dir: str | None = None  # optional held-out class-folder root, evaluated with the best model (results/test_*)
    text_template: str | None = None  # class text from a template, e.g. "这是一张{class_name}的医学图像"
    class_texts_file: str | None = None  # JSON {"class": "description"} covering every class; wins over the template
    image_encoder_name: ImageEncoderName = "starnet_dual_pyramid_rcf"  # image tower (the guide's names)
    text_encoder_name: str = "bert-base-chinese"  # BERT-style Hugging Face name or local directory
    embed_dim: int = 512  # size of the shared image-text embedding
    temperature: float = 0.07  # initial softmax temperature (learned, clamped to [0.01, 1])
    img_size: int = 224  # input images are resized to img_size x img_size
    augmentation: Literal["none", "minimal", "standard"] = "standard"  # training augmentation (see README)
    pretrained: bool = True  # ImageNet weights for the image encoder when available
    balanced_sampling: bool = False  # draw every class equally often during training
    val_fraction: float = 0.2  # held-out share without use_cv (stratified, seeded by train.seed)
    split: SplitConfig = field(default_factory=SplitConfig)  # by image, or by patient (validation split and CV folds)
    use_cv: bool = False  # stratified K-fold cross-validation, a fresh model per fold
    n_splits: int = 5  # number of folds with use_cv
    gpu_id: int = 0  # CUDA device of a single-process run (accelerate launch assigns devices itself)
    multi_config: bool = False  # train every entry of multi_config_file, one after the other
    multi_config_file: str = ""  # JSON list of settings (the guide's keys); each entry overrides these
    train: TrainConfig = field(default_factory=guide_training_defaults)  # the shared engine's settings

    def __post_init__(self) -> None:
        # The guide names its monitors val_acc / val_loss, and resumes by naming a checkpoint.
        stop = self.train.early_stopping
        if stop.monitor in GUIDE_MONITORS:
            stop.monitor, stop.mode = GUIDE_MONITORS[stop.monitor]
        if self.train.resume_checkpoint:
            self.train.resume = True

    def validate(self) -> None:
        """Reject values that would fail late or train nonsense, naming the guide's option."""
        train, stop = self.train, self.train.early_stopping
        checks = [
            (bool(self.data_dir), "--data-dir is required"),
            (bool(train.output_dir), "--output-dir is required"),
            (train.epochs >= 1, f"--epochs must be >= 1, got {train.epochs}"),
            (train.batch_size >= 2, f"--batch-size must be >= 2 for a contrastive loss, got {train.batch_size}"),
            (train.lr > 0, f"--learning-rate must be > 0, got {train.lr}"),
            (self.embed_dim >= 1, f"--embed-dim must be >= 1, got {self.embed_dim}"),
            (0.01 <= self.temperature <= 1.0, f"--temperature must lie in [0.01, 1], got {self.temperature}"),
            (self.n_splits >= 2, f"--n-splits must be >= 2, got {self.n_splits}"),
            (stop.patience >= 0, f"--early-stopping-patience must be >= 0 (0 = off), got {stop.patience}"),
            (stop.min_delta >= 0, f"--early-stopping-min-delta must be >= 0, got {stop.min_delta}"),
            (0 < self.val_fraction < 1, f"val_fraction must lie in (0, 1), got {self.val_fraction}"),
            (train.num_workers >= 0, f"--num-workers must be >= 0, got {train.num_workers}"),
            (not (self.use_cv and train.resume), "--resume-from continues a single run; with --use-cv start the folds afresh"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_image_size(self.img_size, image_encoder_stride(self.image_encoder_name), "img_size",
                         self.image_encoder_name)


# ------------------------------------------------------------------------------ multi-config entries
def read_config_file(path: str) -> list:
    """The entries of a ``--multi-config --config-file`` (a JSON list, the guide's train_clip_config.json)."""
    if not path:
        raise ConfigError("--multi-config needs --config-file (a JSON list of config dicts)")
    entries = read_json(path, "config file", ConfigError)
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"config file {path} must hold a non-empty JSON list of objects")
    return entries


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _default(key: str) -> Any:
    value: Any = ClipTrainConfig()
    for part in key.split("."):
        value = getattr(value, part, None)
    return value


def entry_settings(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of a multi-config file (guide keys or config keys) as ``{dotted config key: value}``,
    through :data:`ALIASES`. ``null`` means the default (``"early_stopping_patience": null`` = no early stopping)."""
    settings: dict[str, Any] = {}
    for key, value in _flat(entry).items():
        target = ALIASES.get(key, key)
        if "=" in target:  # a switch: true sets its first value, false its second (else leaves the setting)
            value = UNSET if value is None else switch_value(key, target, value)
            if value is UNSET:
                continue
            target = target.split("=", 1)[0]
        if target in settings:
            raise ConfigError(f"{key} and another key of the entry both set {target}; give only one of them")
        settings[target] = _default(target) if value is None else value
    return settings


def entry_config(base: ClipTrainConfig, entry: Mapping[str, Any], index: int) -> ClipTrainConfig:
    """``base`` (the command line) overridden by one entry; it trains into ``<output-dir>/NN_<image>_<text>/``
    unless the entry names its own output_dir. An entry never resumes."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"config file entry {index} must be a JSON object, got {type(entry).__name__}")
    try:
        settings = entry_settings(entry)
        flat = {**_flat(config_to_dict(base)), "train.resume": False, "train.resume_checkpoint": "",
                "multi_config": False, **settings}
        cfg = config_from_dict(ClipTrainConfig, _nested(flat))
        if "train.output_dir" not in settings:
            text = Path(cfg.text_encoder_name.rstrip("/")).name
            name = re.sub(r"[^\w.-]+", "_", f"{index:02d}_{cfg.image_encoder_name}_{text}")  # 01_resnet50_bert-base-chinese
            cfg.train.output_dir = str(Path(base.train.output_dir) / name)
        cfg.validate()
    except (ConfigError, ValueError) as err:
        raise ConfigError(f"config file entry {index}: {err}") from None
    return cfg
