"""One training run on the shared Engine, used by ``train_mosa.py`` and ``pretrain_resnet.py``.

Layout of a run:

* ``<logging.checkpoint_dir>/checkpoint.pth.tar`` (every ``train.save_every`` epochs and the last) and
  ``model_best.pth.tar`` (best ``train.early_stopping.monitor``); both hold epoch, best metric, optimizer,
  scheduler, ``log_dir`` and ``global_step``, so either can be resumed from;
* ``<train.output_dir>/<run name>_<time>/``: TensorBoard events, ``config.yaml``, ``history.json``,
  ``figures/`` (validation figures of the latest epoch), ``results/``, ``export/`` and the document's
  JSON files (see :mod:`alzheimer_mosa.evaluation`). A resume writes into the folder its checkpoint names.
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

from shared import Engine, FocalLoss, TrainConfig, load_checkpoint, process_state
from alzheimer_mosa.callbacks import BackboneFreezeCallback, TensorBoardCallback, VolumeClassificationTask
from alzheimer_mosa.config import Config, LossConfig, config_from_cli, validate_config
from alzheimer_mosa.data_loader import build_datasets
from alzheimer_mosa.evaluation import evaluate_run
from alzheimer_mosa.model_builder import model_kind

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


def run_folder(cfg: Config, run_name: str) -> Path:
    """The resumed run's log folder (stored in its checkpoint), else a new time-stamped one."""
    if engine_config(cfg).resume:
        resume = cfg.train.resume_checkpoint or Path(cfg.logging.checkpoint_dir) / CHECKPOINT_NAMES["latest"]
        saved = load_checkpoint(resume).get("log_dir")
        if saved:
            return Path(saved)
        logger.warning("%s names no log_dir; logging to a new folder", resume)
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
    set_seed(cfg.train.seed)  # Python, NumPy and torch: the data, the model's initialisation
    with state.main_process_first():  # the demo set is written once
        datasets = build_datasets(cfg)
    model = build_model(cfg)
    out_dir = run_folder(cfg, run_name)
    task = build_task(cfg)
    callbacks = [TensorBoardCallback(task, cfg.logging, out_dir / "figures")]
    if cfg.backbone.freeze_epochs > 0 and hasattr(model, "set_backbone_frozen"):
        callbacks.append(BackboneFreezeCallback(cfg.backbone.freeze_epochs))
    engine = Engine(
        engine_config(cfg), model, task, datasets["train"], datasets["val"], output_dir=out_dir,
        callbacks=callbacks, run_config=cfg, checkpoint_extra={"log_dir": str(out_dir), "run_name": run_name},
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
