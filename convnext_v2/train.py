"""Train a ConvNeXt V1/V2 classifier on class folders (the command line; the source document's
``ConvNeXtTrainer`` is in ``trainer.py`` and trains through :func:`build_engine` below).

    accelerate launch convnext_v2/train.py --data-dir DIR [--config FILE] [--model convnextv2_tiny]
        [--image-size 224 --pretrained hub --train.epochs 100 --train.lr 1e-4 --mix.cutmix false ...]
    python convnext_v2/train.py --help     # every key with its default and meaning

The source document's trainer keywords are other spellings of config keys (:data:`SOURCE_ALIASES`):
``--learning-rate 3e-4``, ``--use-mixup false``, ``--scheduler-type step``, ``--use-amp``, ``--no-amp``, ...
``DIR`` holds one folder of images per class; without ``--val-dir`` it is split (stratified, seeded, by patient
with ``--split.group_pattern``) by ``--split.fractions`` into train/val[/test]. After training, the best weights
(raw or EMA, whichever validated better) are evaluated on every split into ``results/`` and exported to ``export/``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import Dataset

from convnext_v2.data import AugmentConfig, ClassFolderSplit, build_eval_transform, build_train_transform, \
    class_folder, split_class_folder
from convnext_v2.mixing import MixConfig, MixUpCutMix
from convnext_v2.model import architecture, create_model
from convnext_v2.task import ClassificationTask, best_is_ema, plot_curves
from shared import (ConfigError, EarlyStoppingConfig, Engine, IMAGENET_MEAN, IMAGENET_STD, Preprocessing,
                    SoftTargetCrossEntropy, TrainConfig, check_image_size, evaluate_best, export_model, parse_cli,
                    run_cli, total_stride)

DESCRIPTION = "Train a ConvNeXt V1/V2 classifier on class folders."

#: The source document's names (ConvNeXtTrainer, setup_optimizer, setup_scheduler keywords) -> config keys.
#: Valid on the command line (--learning-rate 3e-4), in a --config file and as ConvNeXtTrainer arguments
#: (--use-amp and --no-amp are true/false switches of train.mixed_precision).
SOURCE_ALIASES = {
    "use_mixup": "mix.mixup", "use_cutmix": "mix.cutmix", "label_smoothing": "mix.label_smoothing",
    "mixup_alpha": "mix.mixup_alpha", "cutmix_alpha": "mix.cutmix_alpha",
    "learning_rate": "train.lr", "weight_decay": "train.weight_decay", "optimizer": "train.optimizer",
    "scheduler_type": "train.scheduler", "epochs": "train.epochs", "warmup_epochs": "train.warmup_epochs",
    "min_lr": "train.min_lr", "step_size": "train.decay_epochs", "gamma": "train.decay_rate",
    "batch_size": "train.batch_size", "num_workers": "train.num_workers", "cpu": "train.cpu",
    "use_amp": "train.mixed_precision=auto|no", "no_amp": "train.mixed_precision=no",
}


def default_train_config(**overrides: Any) -> TrainConfig:
    """The ConvNeXt fine-tuning recipe of the source document: AdamW 1e-4, weight decay 0.05, cosine."""
    values = dict(output_dir="runs/convnext_v2", lr=1e-4, weight_decay=0.05, warmup_epochs=5.0,
                  early_stopping=EarlyStoppingConfig(monitor="val/accuracy", mode="max"))
    return TrainConfig(**{**values, **overrides})


@dataclass
class RunConfig:
    data_dir: str = ""  # class folders: <data_dir>/<class name>/<image> (required on the command line)
    val_dir: str = ""  # separate validation class folders (same classes); then all of data_dir trains
    split: ClassFolderSplit = field(default_factory=ClassFolderSplit)  # how data_dir is split (without val_dir)
    model: str = "convnextv2_tiny"  # convnext_{tiny,small,base,large,xlarge} or convnextv2_{atto,...,huge}
    pretrained: str = ""  # "" = random init, "hub" = timm's ImageNet-1k weights, or an official/timm weights file
    drop_path_rate: float = 0.1  # stochastic depth of the last block, rising linearly from 0 at the first
    image_size: int = 224  # square training and evaluation size in pixels
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training augmentations
    mix: MixConfig = field(default_factory=MixConfig)  # MixUp / CutMix / label smoothing
    train: TrainConfig = field(default_factory=default_train_config)  # the shared training settings


def build_engine(cfg: RunConfig, model: nn.Module, train_set: Dataset, val_set: Dataset | None = None, *,
                 class_names: Sequence[str], collate_fn=None, held_out=None) -> Engine:
    """The one training path: ``cfg.train`` as it is; MixUp/CutMix + soft-target cross-entropy in training,
    plain cross-entropy on the true labels in evaluation."""
    task = ClassificationTask(nn.CrossEntropyLoss(), class_names, train_loss_fn=SoftTargetCrossEntropy(),
                              batch_transform=MixUpCutMix.from_config(len(class_names), cfg.mix))
    return Engine(cfg.train, model, task, train_set, val_set, collate_fn=collate_fn, run_config=cfg,
                  project_name="convnext_v2", held_out=held_out)


def export_best(engine: Engine, image_size: int, use_ema: bool) -> Path:
    """The currently loaded raw or EMA weights as ``<output_dir>/export`` (shared format, see shared.export)."""
    model = engine.ema.module if use_ema else engine.accelerator.unwrap_model(engine.model)
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    out = engine.output_dir / "export"
    if engine.accelerator.is_main_process:
        export_model(model, out, project="convnext_v2", architecture=architecture(model),
                     class_names=engine.task.class_names, task="multi-class",
                     preprocessing=Preprocessing(size=(image_size, image_size), channels=3, mean=IMAGENET_MEAN,
                                                 std=IMAGENET_STD, spatial_dims=2))
    engine.accelerator.wait_for_everyone()
    return out


def parse_config(argv: Sequence[str] | None = None, defaults: type[RunConfig] = RunConfig,
                 description: str = DESCRIPTION) -> RunConfig:
    cfg = parse_cli(defaults, argv, description=description, aliases=SOURCE_ALIASES)
    if not cfg.data_dir:
        raise ConfigError("--data-dir is required (a folder with one sub-folder of images per class)")
    return cfg


def build_datasets(cfg: RunConfig) -> list[Dataset]:
    """[train, val] or [train, val, test] datasets with the training augmentations on the first."""
    train_tf, eval_tf = build_train_transform(cfg.image_size, cfg.augment), build_eval_transform(cfg.image_size)
    split = cfg.split
    if cfg.val_dir:
        train = class_folder(cfg.data_dir, train_tf, group_pattern=split.group_pattern)
        return [train, class_folder(cfg.val_dir, eval_tf, train.class_names, split.group_pattern)]
    transforms = [train_tf] + [eval_tf] * (len(split.fractions) - 1)
    return split_class_folder(cfg.data_dir, split.fractions, cfg.train.seed, transforms, split.group_pattern)


def main(argv: Sequence[str] | None = None, defaults: type[RunConfig] = RunConfig,
         description: str = DESCRIPTION) -> dict[str, Any]:
    """Train, evaluate the best weights on val (and test), export; returns history, metrics and the engine."""
    cfg = parse_config(argv, defaults, description)
    datasets = build_datasets(cfg)
    class_names = datasets[0].class_names
    set_seed(cfg.train.seed)  # the model's random initialisation is part of the seeded run
    model = create_model(cfg.model, num_classes=len(class_names), drop_path_rate=cfg.drop_path_rate,
                         pretrained={"": False, "hub": True}.get(cfg.pretrained, cfg.pretrained))
    check_image_size(cfg.image_size, total_stride(model), "image_size", cfg.model)
    engine = build_engine(cfg, model, *datasets[:2], class_names=class_names, held_out=dict(zip(["test"], datasets[2:])))
    engine.accelerator.print(
        f"{cfg.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {len(class_names)} "
        "classes; " + ", ".join(f"{name} {len(data)}" for name, data in zip(["train", "val", "test"], datasets))
        + f" images, on {engine.accelerator.num_processes} processes")
    history = engine.fit()
    plot_curves(engine)
    use_ema = best_is_ema(engine)
    results = evaluate_best(engine, dict(zip(["val", "test"], datasets[1:])), use_ema=use_ema)["splits"]
    weights = "ema" if use_ema else "raw"
    for split, metrics in results.items():
        engine.accelerator.print(f"{split} ({weights} weights): accuracy {metrics['accuracy']:.4f}, "
                                 f"macro F1 {metrics['f1_macro']:.4f}")
    export = export_best(engine, cfg.image_size, use_ema)
    engine.close()
    return {"history": history, **results, "weights": weights, "export": export, "config": cfg, "engine": engine}


def __getattr__(name: str):
    """``from convnext_v2.train import ConvNeXtTrainer`` (the source document's import) keeps working."""
    if name == "ConvNeXtTrainer":
        from convnext_v2.trainer import ConvNeXtTrainer
        return ConvNeXtTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    run_cli(main)
