"""One training run on the shared Engine, used by ``train_mosa.py`` and ``pretrain_resnet.py``.

Layout of a run:

* ``<logging.checkpoint_dir>/checkpoint.pth.tar`` (every ``train.save_every`` epochs and the last) and
  ``model_best.pth.tar`` (best ``train.early_stopping.monitor``); both hold epoch, best metric, optimizer,
  scheduler, ``log_dir`` and ``global_step``, so either can be resumed from;
* ``<train.output_dir>/<run name>_<time>/``: TensorBoard events, ``config.yaml``, ``history.json``,
  ``figures/`` (validation figures of the latest epoch), ``results/``, ``export/`` and the document's
  JSON files (see :mod:`alzheimer_mosa.evaluation`).

A resume continues the run whose checkpoints are in ``logging.checkpoint_dir``, in the run folder of the name
its checkpoint holds under this config's ``train.output_dir``: it writes only into folders this config names. A
checkpoint from another folder (its run folder and best checkpoint are that run's) and a checkpoint of other
``data.class_names``, or another order of them, are refused before anything is read or written.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from accelerate.utils import broadcast_object_list, set_seed
from torch import nn

from shared import CheckpointError, ConfigError, Engine, FocalLoss, TrainConfig, load_checkpoint, process_state
from alzheimer_mosa.callbacks import BackboneFreezeCallback, TensorBoardCallback, VolumeClassificationTask
from alzheimer_mosa.config import Config, LossConfig, config_from_cli, validate_config
from alzheimer_mosa.data_loader import build_datasets
from alzheimer_mosa.evaluation import evaluate_run
from alzheimer_mosa.model_builder import check_training_batch, model_kind

logger = logging.getLogger(__name__)

CHECKPOINT_NAMES = {"latest": "checkpoint.pth.tar", "best": "model_best.pth.tar", "best_ema": "model_best_ema.pth.tar"}


def make_loss(loss: LossConfig) -> nn.Module:
    """Cross-entropy or softmax focal loss, both with label smoothing; focal takes per-class ``alpha``."""
    if loss.name == "focal":
        return FocalLoss(alpha=loss.alpha or None, gamma=loss.gamma, label_smoothing=loss.label_smoothing)
    return nn.CrossEntropyLoss(label_smoothing=loss.label_smoothing)


def engine_config(cfg: Config) -> TrainConfig:
    """``cfg.train`` as the engine gets it: a ``resume_checkpoint`` implies ``resume``, and DDP must
    tolerate the parameters of a frozen backbone."""
    t = cfg.train
    return dataclasses.replace(t, resume=t.resume or bool(t.resume_checkpoint),
                               find_unused_parameters=t.find_unused_parameters or cfg.backbone.freeze_epochs > 0)


def build_task(cfg: Config) -> VolumeClassificationTask:
    return VolumeClassificationTask(make_loss(cfg.loss), cfg.data.class_names, positive_class=cfg.data.positive_index)


def resumed_run_folder(cfg: Config, run_name: str) -> Path | None:
    """The folder a resume continues, or None for a new one; see the module docstring. Both checks run here,
    before the engine, which writes into the run folder before it loads the checkpoint."""
    checkpoint_dir = Path(cfg.logging.checkpoint_dir)
    source = Path(cfg.train.resume_checkpoint or checkpoint_dir / CHECKPOINT_NAMES["latest"])
    if source.resolve().parent != checkpoint_dir.resolve():  # its best checkpoint and run folder are elsewhere
        raise ConfigError(f"train.resume_checkpoint {source} is not in logging.checkpoint_dir {checkpoint_dir}: a "
                          f"resume continues the run whose checkpoints are there; pass --logging.checkpoint_dir "
                          f"{source.parent} to continue that run, or start a new one from its weights with "
                          f"backbone.pretrained_path")
    state = load_checkpoint(source)
    saved_classes, classes = state.get("class_names"), list(cfg.data.class_names)
    if saved_classes is not None and list(saved_classes) != classes:
        raise CheckpointError(f"{source} was trained with data.class_names {list(saved_classes)}, but this run has "
                              f"{classes} (its labels would be read as other classes); resume with --data.class_names "
                              f"'[{', '.join(saved_classes)}]' in that order, or start a new run without train.resume")
    name = Path(state.get("log_dir") or "").name  # the name only: the folder is this config's
    if name.startswith(f"{run_name}_"):
        return Path(cfg.train.output_dir) / name
    logger.warning("%s names no %s run folder; logging to a new folder", source, run_name)
    return None


def run_folder(cfg: Config, run_name: str) -> Path:
    """This run's folder under ``train.output_dir``: the resumed one, else a new time-stamped one."""
    resumed = resumed_run_folder(cfg, run_name) if engine_config(cfg).resume else None
    if resumed is not None:
        return resumed
    base = Path(cfg.train.output_dir) / f"{run_name}_{time.strftime('%Y%m%d-%H%M%S')}"
    folder, suffix = base, 1
    while folder.exists():  # two runs started within the same second
        suffix += 1
        folder = base.with_name(f"{base.name}_{suffix}")
    chosen = [str(folder)]
    broadcast_object_list(chosen)  # every process must agree with the main one's clock
    return Path(chosen[0])


def train(cfg: Config, build_model: Callable[[Config], nn.Module], run_name: str) -> dict[str, Any]:
    """Train, pick the best epoch, evaluate it on val (and test), export it; returns the ``summary_all.json`` payload."""
    validate_config(cfg)
    state = process_state()  # first: makes a CPU multi-process launch gloo DDP
    check_training_batch(cfg, state.num_processes)
    out_dir = run_folder(cfg, run_name)  # a resume that does not fit is refused before the data is read
    set_seed(cfg.train.seed)  # Python, NumPy and torch: the data, the model's initialisation
    with state.main_process_first():  # the demo set is written once
        datasets = build_datasets(cfg)
    model = build_model(cfg)
    task = build_task(cfg)
    callbacks = [TensorBoardCallback(task, cfg.logging, out_dir / "figures")]
    if cfg.backbone.freeze_epochs > 0 and hasattr(model, "set_backbone_frozen"):
        callbacks.append(BackboneFreezeCallback(cfg.backbone.freeze_epochs))
    engine = Engine(
        engine_config(cfg), model, task, datasets["train"], datasets["val"], output_dir=out_dir,
        held_out={split: ds for split, ds in datasets.items() if split not in ("train", "val")}, callbacks=callbacks, run_config=cfg, checkpoint_extra={"log_dir": str(out_dir), "run_name": run_name},
        checkpoint_names=CHECKPOINT_NAMES, checkpoint_dir=cfg.logging.checkpoint_dir,
        log_dir=out_dir.parent, project_name=out_dir.name,
    )
    logger.info("run folder %s, checkpoints in %s, %s", out_dir, engine.checkpoint_dir,
                {split: len(ds) for split, ds in datasets.items()})
    try:
        engine.fit()
        return evaluate_run(engine, task, datasets, cfg, run_name, model_kind(model))
    finally:
        engine.close()


def summary_line(summary: dict[str, Any]) -> str:
    parts = [f"best epoch {summary['best_epoch']} ({summary['monitor']}={summary['best_metric']})"]
    for split in ("best_val", "test"):
        if summary[split]:
            values = summary[split]
            parts.append(f"{split}: auc={values.get('auc', np.nan):.4f} accuracy={values['accuracy']:.4f}")
    return "; ".join(parts) + f" -> {summary['log_dir']}/summary_all.json"


def main(config_cls: type[Config], build_model: Callable[[Config], nn.Module], run_name: str,
         argv: Sequence[str] | None = None, description: str = "") -> dict[str, Any]:
    """Command-line entry of both scripts: parse the config, train, print the closing line. Run through
    ``shared.run_cli``, a wrong setting, bad data, an unusable checkpoint or a NaN loss ends in one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = train(config_from_cli(config_cls, argv, description), build_model, run_name)
    if process_state().is_main_process:
        print(summary_line(summary))
    return summary
