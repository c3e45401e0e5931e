"""Train a CLIP-style image-text model on class-folder medical images (the guide's train_clip.py).

Three modes, as in the guide: a single run (stratified 80/20 split), K-fold cross-validation (--use-cv), and
several configurations from a JSON list (--multi-config --config-file FILE); --split.group_pattern splits by
patient. Settings: the keys below (--train.lr 1e-4, --set train.lr=1e-4, --config FILE.yaml) or the guide's
flags (--learning-rate 1e-4).
The same command runs under accelerate launch --multi_gpu --num_processes 8 clip_medical/train_clip.py ...

    python clip_medical/train_clip.py --data-dir single_label_data --output-dir runs/clip/my_model \\
        --class-texts-file class_texts.json
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from accelerate.utils import set_seed

from shared import (ConfigError, Engine, build_image_transform, config_to_dict, evaluate_best, parse_cli,
                    process_state, run_cli, write_json)
from shared.run_folder import refuse_existing_runs
from clip_medical.config import ALIASES, ClipTrainConfig, entry_config, read_config_file
from clip_medical.data import ClassFolderData, class_balanced_weights, cross_validation_folds, train_val_split
from clip_medical.export import export_zero_shot
from clip_medical.models import build_clip_model, tokenize
from clip_medical.run_outputs import best_epoch, best_model_report, cjk_plotting, split_summary, summarize_folds
from clip_medical.task import ZeroShotCLIPTask

logger = logging.getLogger("clip_medical.train_clip")


def parse_args(argv: Sequence[str] | None = None) -> ClipTrainConfig:
    return parse_cli(ClipTrainConfig, argv, description=__doc__, aliases=ALIASES)


def select_gpu(gpu_id: int) -> None:
    """Honour ``--gpu-id`` in a single-process run by narrowing CUDA_VISIBLE_DEVICES (an index into
    the devices already visible). Under ``accelerate launch`` the launcher assigns the devices."""
    if "LOCAL_RANK" in os.environ or "ACCELERATE_MIXED_PRECISION" in os.environ:
        if gpu_id != 0:
            logger.info("--gpu-id %d ignored: accelerate launch assigns the devices", gpu_id)
        return
    if gpu_id == 0:
        return  # the first visible device is Accelerate's default anyway
    if torch.cuda.is_initialized():
        raise RuntimeError("--gpu-id must be applied before CUDA is initialised in this process")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else None
    if devices is not None and gpu_id >= len(devices):
        raise ValueError(f"--gpu-id {gpu_id} but only {len(devices)} device(s) are visible: {visible}")
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[gpu_id] if devices is not None else str(gpu_id)


def train_split(cfg: ClipTrainConfig, data: ClassFolderData, train_idx: np.ndarray, val_idx: np.ndarray,
                run_dir: Path) -> dict[str, Any]:
    """Train a fresh model on one split; evaluate the best checkpoint (or, without one, the final model)
    with shared.evaluate_best, export it, and return the run's summary (its row of cv_summary.json)."""
    set_seed(cfg.train.seed)  # each fold's fresh model starts from the same seeded initialisation
    model, tokenizer = build_clip_model(cfg.image_encoder_name, cfg.text_encoder_name, cfg.embed_dim,
                                        cfg.temperature, cfg.img_size, pretrained_image=cfg.pretrained)
    tokens = tokenize(tokenizer, data.class_texts)
    eval_transform = build_image_transform(cfg.img_size, False)
    train_set = data.subset(train_idx, build_image_transform(cfg.img_size, True, cfg.augmentation))
    splits = {"val": data.subset(val_idx, eval_transform)}
    if cfg.test_dir:
        splits["test"] = data.held_out(cfg.test_dir, eval_transform)
    engine = Engine(
        cfg.train, model, ZeroShotCLIPTask(tokens, data.class_names), train_set, splits["val"], output_dir=run_dir,
        checkpoint_dir=run_dir, run_config=cfg,  # without a best checkpoint (--no-save-best) the final model is evaluated
        checkpoint_extra={"class_to_idx": data.class_to_idx, "class_texts": dict(zip(data.class_names, data.class_texts))},
        sample_weights=class_balanced_weights(train_set.labels) if cfg.balanced_sampling else None,
        held_out={"test": splits["test"]} if "test" in splits else None,
    )
    history = engine.fit()
    with cjk_plotting():
        val = evaluate_best(engine, splits)["splits"]["val"]
    stop = cfg.train.early_stopping
    best = best_epoch(history, stop.monitor, stop.mode)
    evaluated = best if cfg.train.save_best else len(history)
    title = f"best checkpoint, epoch {best}" if cfg.train.save_best else f"final model, epoch {evaluated}"
    report = best_model_report(val, history[evaluated - 1], data.class_names, title)
    if engine.accelerator.is_main_process:
        write_json(run_dir / "best_model_metrics.json", report)
        export_zero_shot(engine.accelerator.unwrap_model(engine.model), tokenizer, tokens, run_dir / "export",
                         image_encoder=cfg.image_encoder_name, img_size=cfg.img_size, class_names=data.class_names,
                         class_texts=data.class_texts, extra={"epoch": evaluated})
    engine.close()
    return split_summary(history, report, best)


def run_config(cfg: ClipTrainConfig) -> dict[str, Any]:
    """One configuration: a single split, or K folds with a fresh model each."""
    cfg.validate()
    data = ClassFolderData.scan(cfg.data_dir, cfg.class_texts_file, cfg.text_template, cfg.split.group_pattern)
    out = Path(cfg.train.output_dir)
    refuse_existing_runs(out, cfg.train)  # before config.json of an earlier run (or its folds) is replaced
    if process_state().is_main_process:
        write_json(out / "config.json", config_to_dict(cfg))
        write_json(out / "class_texts.json", dict(zip(data.class_names, data.class_texts)))
    logger.info("%d images in %d classes %s", len(data.labels), len(data.class_names), data.class_names)
    if not cfg.use_cv:
        train_idx, val_idx = train_val_split(data.labels, cfg.val_fraction, cfg.train.seed, data.groups)
        return train_split(cfg, data, train_idx, val_idx, out)

    results = []
    folds = cross_validation_folds(data.labels, cfg.n_splits, cfg.train.seed, data.groups)
    for fold, (train_idx, val_idx) in enumerate(folds, 1):
        logger.info("fold %d/%d: %d train, %d val images", fold, cfg.n_splits, len(train_idx), len(val_idx))
        results.append({"fold": fold, **train_split(cfg, data, train_idx, val_idx, out / f"fold_{fold}")})
    summary = summarize_folds(results)
    if process_state().is_main_process:
        write_json(out / "cv_summary.json", summary)
    for key in ("val_acc", "best_val_acc", "best_model_val_auc"):
        logger.info("CV %s: %s", key, summary["mean_std"][key])
    return summary


def run_multi_config(base: ClipTrainConfig) -> list[dict]:
    """Each entry of ``--config-file`` overrides the command line and trains into its own folder; every
    entry is checked before the first one trains."""
    configs = [entry_config(base, entry, index) for index, entry in enumerate(read_config_file(base.multi_config_file), 1)]
    for index, cfg in enumerate(configs, 1):
        if cfg.gpu_id != base.gpu_id:
            logger.warning("config file entry %d: gpu_id %d ignored; this process runs on --gpu-id %d",
                           index, cfg.gpu_id, base.gpu_id)
    results = []
    for index, cfg in enumerate(configs, 1):
        logger.info("config %d/%d -> %s", index, len(configs), cfg.train.output_dir)
        results.append({"output_dir": cfg.train.output_dir, "config": config_to_dict(cfg), "results": run_config(cfg)})
    if process_state().is_main_process:
        write_json(Path(base.train.output_dir) / "multi_config_summary.json", results)
    return results


def main(argv: Sequence[str] | None = None) -> Any:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    select_gpu(cfg.gpu_id)  # once: a process cannot change its CUDA device set later
    if cfg.multi_config_file and not cfg.multi_config:
        raise ConfigError("--config-file is read with --multi-config only")
    return run_multi_config(cfg) if cfg.multi_config else run_config(cfg)


if __name__ == "__main__":
    run_cli(main)
