"""One training run on the shared Engine, used by ``train_mosa.py`` and ``pretrain_resnet.py``.

Layout of a run:

* ``<training.checkpoint_dir>/checkpoint.pth.tar`` (every ``save_freq`` epochs and the last) and
  ``model_best.pth.tar`` (best ``training.monitor``); both hold epoch, best metric, optimizer,
  scheduler, ``log_dir`` and ``global_step``, so either can be resumed from;
* ``<training.log_dir>/<run name>_<time>/``: TensorBoard events, ``config.yaml``, ``history.json``,
  ``figures/*.png``, ``best_val_per_class_metrics.json``, ``test_per_class_metrics.json``,
  ``summary_all.json``. A resume (``training.resume``) writes into the folder its checkpoint names.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from torch import nn

from shared import (
    CheckpointError,
    ConfigError,
    DataError,
    EarlyStoppingConfig,
    Engine,
    FocalLoss,
    TrainConfig,
    config_to_dict,
    load_checkpoint,
    load_model_weights,
    plot_training_curves,
    process_state,
)
from alzheimer_mosa.callbacks import BackboneFreezeCallback, TensorBoardCallback, VolumeClassificationTask
from alzheimer_mosa.config import Config, TrainingConfig, config_from_cli, validate_config
from alzheimer_mosa.data_loader import VolumeDataset, build_datasets
from alzheimer_mosa.metrics_utils import (
    add_figures_to_tensorboard,
    per_class_report,
    save_figures,
    scalar_metrics,
    write_json,
)

logger = logging.getLogger(__name__)

CHECKPOINT_NAMES = {"latest": "checkpoint.pth.tar", "best": "model_best.pth.tar"}
CURVE_KEYS = ["train/loss", "val/loss", "val/accuracy", "val/auc", "train/lr"]


def make_loss(training: TrainingConfig) -> nn.Module:
    """Cross-entropy or softmax focal loss, both with label smoothing; focal takes per-class ``alpha``."""
    if training.loss_fn == "focal":
        return FocalLoss(alpha=training.alpha or None, gamma=training.gamma, label_smoothing=training.label_smoothing)
    return nn.CrossEntropyLoss(label_smoothing=training.label_smoothing)


def engine_config(cfg: Config, output_dir: Path) -> TrainConfig:
    """Our config -> the shared engine's. The engine's own scalar logging is off: the callbacks write
    the ``Train/``, ``Val/`` and ``Test/`` tags this project promises."""
    t = cfg.training
    return TrainConfig(
        output_dir=str(output_dir), epochs=t.epochs, batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers, optimizer=t.optimizer, lr=t.learning_rate, min_lr=t.min_lr,
        weight_decay=t.weight_decay, momentum=t.momentum, scheduler=t.lr_scheduler, warmup_epochs=t.warmup_epochs,
        decay_epochs=t.step_size, decay_rate=t.lr_decay, grad_clip=t.grad_clip, mixed_precision=t.mixed_precision,
        ema=False, early_stopping=EarlyStoppingConfig(monitor=t.monitor, mode=t.monitor_mode,
                                                      patience=t.early_stopping_patience),
        seed=t.seed, resume=bool(t.resume), resume_checkpoint=t.resume, save_every=t.save_freq,
        progress_bar=cfg.logging.progress_bar, find_unused_parameters=cfg.backbone.freeze_epochs > 0,
        log_scalars=False, full_best_checkpoint=True,
    )


def build_task(cfg: Config) -> VolumeClassificationTask:
    return VolumeClassificationTask(make_loss(cfg.training), cfg.data.class_names,
                                    positive_class=cfg.data.positive_index)


def run_folder(cfg: Config, run_name: str) -> Path:
    """The resumed run's log folder (stored in its checkpoint), else a new time-stamped one."""
    if cfg.training.resume:
        saved = load_checkpoint(cfg.training.resume).get("log_dir")
        if saved:
            return Path(saved)
        logger.warning("%s names no log_dir; logging to a new folder", cfg.training.resume)
    base = Path(cfg.training.log_dir) / f"{run_name}_{time.strftime('%Y%m%d-%H%M%S')}"
    folder, suffix = base, 1
    while folder.exists():  # two runs started within the same second
        suffix += 1
        folder = base.with_name(f"{base.name}_{suffix}")
    chosen = [str(folder)]
    broadcast_object_list(chosen)  # every process must agree with the main one's clock
    return Path(chosen[0])


def evaluate_split(engine: Engine, task: VolumeClassificationTask, dataset: VolumeDataset, split: str,
                   out_dir: Path, export_per_class: bool) -> dict[str, Any]:
    """Metrics, figures (PNG + TensorBoard ``<Split>/*`` at the final step) and per-class JSON of a split."""
    metrics, outputs = engine.evaluate(dataset)
    if not engine.accelerator.is_main_process:
        return metrics
    class_names = task.class_names
    figures = save_figures(outputs["targets"], task.probabilities(outputs), metrics["confusion_matrix"],
                           class_names, out_dir / "figures", split)
    if export_per_class:
        write_json(out_dir / f"{split}_per_class_metrics.json",
                   {"classes": per_class_report(metrics, class_names, outputs["targets"]),
                    "positive_class": class_names[task.positive_class],
                    "confusion_matrix": {"rows_true_columns_predicted": class_names,
                                         "matrix": metrics["confusion_matrix"]}})
    writer = engine.tensorboard
    if writer is not None and split == "test":
        step = engine.global_step
        for name, value in scalar_metrics(metrics).items():
            writer.add_scalar(f"Test/{name}", value, step)
        add_figures_to_tensorboard(writer, "Test", figures, step)
    return metrics


def load_best_weights(engine: Engine) -> tuple[int | None, float | None]:
    """Put ``model_best.pth.tar`` into the model; ``(epoch, monitored value)``, or Nones when no
    epoch ever gave a finite value (then the last weights are evaluated)."""
    path = engine.checkpoint_path("best")
    if not path.is_file():
        logger.warning("%s was never written (%s was never finite); evaluating the last epoch's weights",
                       path, engine.cfg.early_stopping.monitor)
        return None, None
    best = load_checkpoint(path)
    load_model_weights(engine.accelerator.unwrap_model(engine.model), best["model"], source=str(path))
    return int(best["epoch"]), best["best_metric"]


def train(cfg: Config, build_model: Callable[[Config], nn.Module], run_name: str) -> dict[str, Any]:
    """Train, pick the best epoch, evaluate it on val (and test); returns the ``summary_all.json`` payload."""
    validate_config(cfg)
    state = process_state()  # first: makes a CPU multi-process launch gloo DDP
    torch.manual_seed(cfg.training.seed)
    with state.main_process_first():  # the demo set is written once
        datasets = build_datasets(cfg)
    model = build_model(cfg)
    out_dir = run_folder(cfg, run_name)
    task = build_task(cfg)
    callbacks = [TensorBoardCallback(task, cfg.logging, out_dir / "figures")]
    if cfg.backbone.freeze_epochs > 0 and hasattr(model, "set_backbone_frozen"):
        callbacks.append(BackboneFreezeCallback(cfg.backbone.freeze_epochs))
    engine = Engine(
        engine_config(cfg, out_dir), model, task, datasets["train"], datasets["val"], output_dir=out_dir,
        callbacks=callbacks, run_config=cfg, checkpoint_extra={"log_dir": str(out_dir), "run_name": run_name},
        checkpoint_names=CHECKPOINT_NAMES, checkpoint_dir=cfg.training.checkpoint_dir,
        log_dir=out_dir.parent, project_name=out_dir.name,
    )
    logger.info("run folder %s, checkpoints in %s, %s", out_dir, engine.checkpoint_dir,
                {split: len(ds) for split, ds in datasets.items()})
    try:
        history = engine.fit()
        best_epoch, best_metric = load_best_weights(engine)
        evaluated = {
            split: evaluate_split(engine, task, datasets[key], split, out_dir, cfg.logging.export_per_class)
            for split, key in (("best_val", "val"), ("test", "test")) if key in datasets
        }
    finally:
        engine.close()
    summary = {
        "run_name": run_name, "log_dir": str(out_dir), "checkpoint_dir": str(engine.checkpoint_dir),
        "monitor": cfg.training.monitor, "best_epoch": best_epoch, "best_metric": best_metric,
        "epochs_run": len(history), "global_step": engine.global_step,
        "class_names": cfg.data.class_names, "positive_class": cfg.data.positive_class,
        "best_val": scalar_metrics(evaluated["best_val"]),
        "test": scalar_metrics(evaluated["test"]) if "test" in evaluated else None,
        "config": config_to_dict(cfg),
    }
    if engine.accelerator.is_main_process:
        write_json(out_dir / "summary_all.json", summary)
        if history:
            plot_training_curves(history, out_dir / "figures" / "training_curves.png", keys=CURVE_KEYS)
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    parts = [f"best epoch {summary['best_epoch']} ({summary['monitor']}={summary['best_metric']})"]
    for split in ("best_val", "test"):
        if summary[split]:
            values = summary[split]
            parts.append(f"{split}: auc={values.get('auc', np.nan):.4f} accuracy={values['accuracy']:.4f}")
    return "; ".join(parts) + f" -> {summary['log_dir']}/summary_all.json"


def main(config_cls: type[Config], build_model: Callable[[Config], nn.Module], run_name: str,
         argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry of both scripts: parse the config, train, print the closing line.

    A wrong setting, bad data or an unusable checkpoint ends with its message, not a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = config_from_cli(config_cls, sys.argv[1:] if argv is None else argv)
        summary = train(cfg, build_model, run_name)
    except (ConfigError, DataError, CheckpointError) as err:
        raise SystemExit(f"{type(err).__name__}: {err}") from None
    if process_state().is_main_process:
        print(summary_line(summary))
    return summary
