"""Train ConvNeXt V1/V2 image classifiers: the source document's ``ConvNeXtTrainer`` and a command line.

    accelerate launch convnext_v2/train.py --data-dir DIR --model convnextv2_tiny [--config FILE]
        [--image-size 224 --pretrained hub --train.epochs 100 --train.lr 1e-4 --mix.cutmix false ...]

``DIR`` holds one folder of images per class. Without ``--val-dir`` it is split (stratified,
seeded) by ``--split`` into train/val or train/val/test; a test part is evaluated at the end with
the best weights. Everything is written under ``train.output_dir``: checkpoints (with the class
names and model name, for ``predict_flowers.py``), TensorBoard logs, ``history.json``,
``training_curves.png`` (loss, accuracy, learning rate) and, with a test part, ``test_metrics.json``
and ``confusion_matrix.png``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from convnext_v2.data import (
    AugmentConfig,
    build_eval_transform,
    build_train_transform,
    class_folder,
    split_class_folder,
)
from convnext_v2.mixing import MixConfig, MixUpCutMix
from convnext_v2.model import create_model
from shared import (
    EarlyStoppingConfig,
    Engine,
    MultiClassTask,
    SoftTargetCrossEntropy,
    TrainConfig,
    load_config,
    plot_confusion_matrix,
    plot_training_curves,
    process_state,
)

# The source document's plots: loss, accuracy and learning-rate curves.
CURVE_KEYS = [
    "train/loss", "val/loss", "val_ema/loss", "train/accuracy", "val/accuracy", "val_ema/accuracy", "train/lr",
]


def default_train_config(**overrides: Any) -> TrainConfig:
    """The ConvNeXt fine-tuning recipe of the source document: AdamW 1e-4, weight decay 0.05, cosine."""
    values = dict(
        output_dir="runs/convnext_v2",
        lr=1e-4,
        weight_decay=0.05,
        warmup_epochs=5,
        mixed_precision="auto",
        early_stopping=EarlyStoppingConfig(monitor="val/accuracy", mode="max"),
    )
    return TrainConfig(**{**values, **overrides})


def resolve_precision(use_amp: bool | str) -> str:
    """``True``/"auto": bf16 on GPUs that support it, else fp16; no autocast on the CPU, where it
    does not speed these convolutions up. ``False``/"no": off. "bf16"/"fp16": as given."""
    if use_amp in (False, "no"):
        return "no"
    if use_amp in (True, "auto"):
        if not torch.cuda.is_available():
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if use_amp in ("bf16", "fp16"):
        return use_amp
    raise ValueError(f"use_amp must be True, False, 'auto', 'no', 'bf16' or 'fp16', got {use_amp!r}")


class ClassificationTask(MultiClassTask):
    """Multi-class task that also reports training accuracy (against the dominant label of mixed targets)."""

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, Any]:
        outputs = super().training_step(model, batch)
        targets = outputs["targets"]
        hard_targets = targets.argmax(1) if targets.ndim == 2 else targets
        outputs["accuracy"] = (outputs["logits"].argmax(1) == hard_targets).float().mean()
        return outputs


def _unpack(data: Dataset | DataLoader) -> tuple[Dataset, int | None, int | None, Callable | None]:
    """(dataset, per-device batch size, workers, collate function) of a DataLoader, or just a dataset."""
    if isinstance(data, DataLoader):
        if data.batch_size is None:
            raise ValueError("train() needs DataLoaders with a batch_size (no custom batch_sampler)")
        return data.dataset, data.batch_size, data.num_workers, data.collate_fn
    return data, None, None, None


class ConvNeXtTrainer:
    """The source document's trainer, running on the shared Accelerate ``Engine``.

    So it trains on one CPU or GPU, or on many GPUs under ``accelerate launch``, with gradient
    clipping, model EMA, checkpoints that resume, and TensorBoard logs. Settings the document's
    signature does not name come from ``config`` (a :class:`shared.TrainConfig`).

    * ``device``: "cuda" uses the GPU Accelerate gives each process (the CPU, with a warning, when
      there is none); "cpu" forces the CPU.
    * ``use_amp``: see :func:`resolve_precision`.
    * ``use_mixup`` / ``use_cutmix`` / ``label_smoothing``: see :class:`MixUpCutMix`; training uses
      soft-target cross-entropy, validation plain cross-entropy on the true labels.
    * Weight decay never touches norms, biases, LayerScale or GRN (``ConvNeXt.no_weight_decay``).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str = "cuda",
        use_amp: bool | str = True,
        use_mixup: bool = True,
        use_cutmix: bool = True,
        label_smoothing: float = 0.1,
        *,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        class_names: Sequence[str] | None = None,
        config: TrainConfig | None = None,
        run_config: Any = None,
        checkpoint_extra: dict[str, Any] | None = None,
    ):
        if device not in ("cuda", "cpu"):
            raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            warnings.warn("device='cuda' but no GPU is available: training on the CPU", RuntimeWarning, stacklevel=2)
        self.model = model
        self.config = replace(config or default_train_config(), mixed_precision=resolve_precision(use_amp),
                              cpu=device == "cpu")
        self.mix = MixConfig(use_mixup, use_cutmix, mixup_alpha, cutmix_alpha, label_smoothing)
        self.class_names = list(class_names) if class_names is not None else None
        self.run_config = run_config
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.engine: Engine | None = None
        self.history: list[dict] = []

    def setup_optimizer(
        self, learning_rate: float = 1e-4, weight_decay: float = 0.05, optimizer: str = "adamw"
    ) -> None:
        """AdamW (or any timm optimizer name); decay is skipped for the parameters listed above."""
        self.config = replace(self.config, optimizer=optimizer, lr=learning_rate, weight_decay=weight_decay)

    def setup_scheduler(
        self,
        scheduler_type: str = "cosine",
        epochs: int = 100,
        warmup_epochs: float = 5,
        min_lr: float = 1e-6,
        step_size: float = 30,
        gamma: float = 0.1,
    ) -> None:
        """Linear warmup, then cosine decay to ``min_lr`` or a step decay by ``gamma`` every ``step_size``
        epochs; updated every optimizer step."""
        if scheduler_type not in ("cosine", "step"):
            raise ValueError(f"scheduler_type must be 'cosine' or 'step', got {scheduler_type!r}")
        self.config = replace(self.config, scheduler=scheduler_type, epochs=epochs, warmup_epochs=warmup_epochs,
                              min_lr=min_lr, decay_epochs=step_size, decay_rate=gamma)

    def train(self, train_data: Dataset | DataLoader, val_data: Dataset | DataLoader | None = None,
              epochs: int | None = None) -> list[dict]:
        """Train and return the per-epoch history. DataLoaders (as in the source document) give their
        dataset, batch size (per process), workers and collate function; the engine builds the
        sharded, seeded loaders from them."""
        train_set, batch_size, workers, collate_fn = _unpack(train_data)
        val_set = _unpack(val_data)[0] if val_data is not None else None
        cfg = self.config
        if epochs is not None:
            cfg = replace(cfg, epochs=epochs)
        if batch_size is not None:
            global_batch = batch_size * process_state().num_processes * cfg.grad_accum_steps
            cfg = replace(cfg, batch_size=global_batch, num_workers=workers)
        class_names = self.class_names or getattr(train_set, "class_names", None)
        num_classes = self._num_classes(class_names)
        class_names = class_names or [str(i) for i in range(num_classes)]

        task = ClassificationTask(
            nn.CrossEntropyLoss(),
            class_names,
            train_loss_fn=SoftTargetCrossEntropy(),
            batch_transform=MixUpCutMix.from_config(num_classes, self.mix),
        )
        self.engine = Engine(
            cfg, self.model, task, train_set, val_set, collate_fn=collate_fn, run_config=self.run_config,
            checkpoint_extra=self.checkpoint_extra, project_name="convnext_v2",
        )
        self.history = self.engine.fit()
        if self.engine.accelerator.is_main_process and self.history:
            keys = [k for k in CURVE_KEYS if k in self.history[0]]
            plot_training_curves(self.history, self.engine.output_dir / "training_curves.png", keys=keys)
        return self.history

    def _num_classes(self, class_names: Sequence[str] | None) -> int:
        num_classes = getattr(self.model, "num_classes", None) or (len(class_names) if class_names else None)
        if num_classes is None:
            raise ValueError("pass class_names: the model does not say how many classes it has")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"the model has {num_classes} outputs but there are {len(class_names)} classes")
        return num_classes

    def load_best(self) -> str:
        """Load the best weights by the monitored validation metric, raw or EMA, whichever scored
        better; returns "ema" or "raw"."""
        engine = self._require_engine()
        use_ema = engine.ema is not None and engine.early_stopping.is_better(engine.best_ema_metric, engine.best_metric)
        engine.load_best(use_ema=use_ema)
        return "ema" if use_ema else "raw"

    def evaluate(self, data: Dataset | DataLoader, use_ema: bool = False) -> dict[str, Any]:
        """Metrics (accuracy, F1, AUC, confusion matrix, ...) of the current raw or EMA weights."""
        metrics, _ = self._require_engine().evaluate(_unpack(data)[0], use_ema=use_ema)
        return metrics

    def close(self) -> None:
        """Flush the TensorBoard logs."""
        self._require_engine().close()

    def _require_engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("call train() first")
        return self.engine


# ----------------------------------------------------------------------------------- command line
@dataclass
class RunConfig:
    data_dir: str = ""  # class folders: <data_dir>/<class name>/<image>
    val_dir: str = ""  # optional separate validation class folders; then data_dir is all training data
    split: list[float] = field(default_factory=lambda: [0.8, 0.2])  # train/val[/test] fractions of data_dir
    model: str = "convnextv2_tiny"  # any name in convnext_v2.model.MODELS
    pretrained: str = ""  # "" = random init, "hub" = timm ImageNet-1k weights, or a weights file
    drop_path_rate: float = 0.1
    image_size: int = 224
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainConfig = field(default_factory=default_train_config)


def parse_config(argv: Sequence[str] | None, defaults: type[RunConfig] = RunConfig,
                 description: str = "Train a ConvNeXt V1/V2 classifier on class folders.") -> RunConfig:
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Any config key can be set: --data-dir DIR --model convnextv2_atto --image-size 96 "
        "--train.epochs 30 --mix.cutmix false (or --set train.lr=3e-4)",
    )
    parser.add_argument("--config", help="YAML file with config keys (command-line values win)")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(defaults, args.config, overrides)
    if not cfg.data_dir:
        parser.error("--data-dir is required (a folder with one sub-folder of images per class)")
    return cfg


def build_datasets(cfg: RunConfig) -> list[Dataset]:
    """[train, val] or [train, val, test] datasets with the training augmentations on the first."""
    train_tf, eval_tf = build_train_transform(cfg.image_size, cfg.augment), build_eval_transform(cfg.image_size)
    if cfg.val_dir:
        train = class_folder(cfg.data_dir, train_tf)
        return [train, class_folder(cfg.val_dir, eval_tf, class_names=train.class_names)]
    if len(cfg.split) not in (2, 3):
        raise ValueError(f"split needs 2 (train/val) or 3 (train/val/test) fractions, got {cfg.split}")
    transforms = [train_tf] + [eval_tf] * (len(cfg.split) - 1)
    return split_class_folder(cfg.data_dir, cfg.split, cfg.train.seed, transforms)


def main(argv: Sequence[str] | None = None, defaults: type[RunConfig] = RunConfig,
         description: str = "Train a ConvNeXt V1/V2 classifier on class folders.") -> dict[str, Any]:
    """Train, then evaluate the test part if the split has one; returns the history (and test metrics)."""
    cfg = parse_config(argv, defaults, description)
    datasets = build_datasets(cfg)
    class_names = datasets[0].class_names
    pretrained = {"": False, "hub": True}.get(cfg.pretrained, cfg.pretrained)
    model = create_model(cfg.model, num_classes=len(class_names), pretrained=pretrained,
                         drop_path_rate=cfg.drop_path_rate)
    trainer = ConvNeXtTrainer(
        model, device="cuda" if torch.cuda.is_available() and not cfg.train.cpu else "cpu",
        use_amp=cfg.train.mixed_precision, use_mixup=cfg.mix.mixup, use_cutmix=cfg.mix.cutmix,
        label_smoothing=cfg.mix.label_smoothing, mixup_alpha=cfg.mix.mixup_alpha, cutmix_alpha=cfg.mix.cutmix_alpha,
        class_names=class_names, config=cfg.train, run_config=cfg,
        checkpoint_extra={"model_name": cfg.model, "image_size": cfg.image_size},
    )
    parts = ["train", "val", "test"][: len(datasets)]
    process_state().print(
        f"{cfg.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {len(class_names)} classes; "
        + ", ".join(f"{name} {len(data)}" for name, data in zip(parts, datasets)) + " images"
    )
    results: dict[str, Any] = {"history": trainer.train(datasets[0], datasets[1])}
    if len(datasets) == 3:
        results["test"] = evaluate_test(trainer, datasets[2])
    trainer.close()
    return results


def evaluate_test(trainer: ConvNeXtTrainer, test_set: Dataset) -> dict[str, Any]:
    """Best weights on the test part; writes test_metrics.json and confusion_matrix.png."""
    weights = trainer.load_best()
    metrics = trainer.evaluate(test_set, use_ema=weights == "ema")
    engine = trainer.engine
    if engine.accelerator.is_main_process:
        out = engine.output_dir
        (out / "test_metrics.json").write_text(json.dumps({"weights": weights, **metrics}, indent=2))
        plot_confusion_matrix(metrics["confusion_matrix"], test_set.class_names, out / "confusion_matrix.png",
                              title=f"Test confusion matrix ({weights} weights)")
        print(f"test ({weights} weights): accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['f1_macro']:.4f}")
    return metrics


if __name__ == "__main__":
    main()
