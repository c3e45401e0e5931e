"""Train a CLIP-style image-text model on class-folder medical images (the guide's ``train_clip.py``).

Three modes, as in the guide: a single run (stratified 80/20 split), K-fold cross-validation
(``--use-cv``), and several configurations from a JSON list (``--multi-config --config-file``).
Training runs on the shared Accelerate engine, so the same command works under
``accelerate launch --multi_gpu --num_processes 8 clip_medical/train_clip.py ...``.

    python clip_medical/train_clip.py --data-dir single_label_data --output-dir runs/clip/my_model \\
        --class-texts-file class_texts.json
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from shared import ConfigError, Engine, build_image_transform, config_from_dict, process_state
from clip_medical.config import MONITORS, ClipTrainConfig, engine_config
from clip_medical.data import ClassFolderData, class_balanced_weights, cross_validation_folds, train_val_split
from clip_medical.models import IMAGE_ENCODERS, build_clip_model, tokenize
from clip_medical.json_files import read_json, write_json
from clip_medical.run_outputs import GuideHistoryWriter, summarize_folds, write_evaluation_report
from clip_medical.task import ZeroShotCLIPTask

logger = logging.getLogger("clip_medical.train_clip")

TEXT_ENCODER_DIR = "text_encoder"  # tokenizer + config saved next to the checkpoints, for predict.py


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", required=True, help="class-folder root: <data-dir>/<class>/<images>")
    data.add_argument("--output-dir", required=True)
    text = parser.add_argument_group("class texts")
    text.add_argument("--text-template", default=None, help='e.g. "这是一张{class_name}的图片"; default: the class name')
    text.add_argument("--class-texts-file", default=None, help='JSON {"class": "description"} covering every class')
    model = parser.add_argument_group("model")
    model.add_argument("--image-encoder", default="starnet_dual_pyramid_rcf", choices=list(IMAGE_ENCODERS))
    model.add_argument("--text-encoder", default="bert-base-chinese", help="Hugging Face BERT-style name or local dir")
    model.add_argument("--embed-dim", type=int, default=512)
    model.add_argument("--temperature", type=float, default=0.07, help="initial value; learned during training")
    train = parser.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--learning-rate", type=float, default=1e-4)
    train.add_argument("--weight-decay", type=float, default=0.01)
    train.add_argument("--img-size", type=int, default=224)
    train.add_argument("--augmentation", default="standard", choices=["none", "minimal", "standard"])
    other = parser.add_argument_group("other")
    other.add_argument("--num-workers", type=int, default=4)
    other.add_argument("--gpu-id", type=int, default=0,
                       help="device index for a plain python run (accelerate launch assigns devices itself)")
    other.add_argument("--no-amp", action="store_true", help="disable mixed precision (AMP applies on CUDA only)")
    other.add_argument("--resume-from", default=None, help="checkpoint_latest.pth of an earlier single run")
    other.add_argument("--no-save-best", action="store_true", help="do not write checkpoint_best.pth")
    cv = parser.add_argument_group("cross-validation")
    cv.add_argument("--use-cv", action="store_true")
    cv.add_argument("--n-splits", type=int, default=5)
    cv.add_argument("--random-state", type=int, default=42)
    stop = parser.add_argument_group("early stopping")
    stop.add_argument("--early-stopping-patience", type=int, default=None, help="default: no early stopping")
    stop.add_argument("--early-stopping-min-delta", type=float, default=0.0,
                      help="for val_acc in percentage points (0.1 = 0.1%%)")
    stop.add_argument("--early-stopping-monitor", default="val_acc", choices=list(MONITORS))
    multi = parser.add_argument_group("multi-config")
    multi.add_argument("--multi-config", action="store_true")
    multi.add_argument("--config-file", default=None, help="JSON list of config dicts (the guide's snake_case keys)")
    extra = parser.add_argument_group("additions to the guide")
    extra.add_argument("--balanced-sampling", action="store_true", help="draw every class equally often")
    extra.add_argument("--no-pretrained", action="store_true", help="random init for the image encoder")
    return parser


def config_from_args(args: argparse.Namespace) -> ClipTrainConfig:
    return ClipTrainConfig(
        data_dir=args.data_dir, output_dir=args.output_dir, text_template=args.text_template,
        class_texts_file=args.class_texts_file, image_encoder_name=args.image_encoder,
        text_encoder_name=args.text_encoder, embed_dim=args.embed_dim, temperature=args.temperature,
        batch_size=args.batch_size, epochs=args.epochs, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, img_size=args.img_size, augmentation=args.augmentation,
        num_workers=args.num_workers, gpu_id=args.gpu_id, use_amp=not args.no_amp, resume_from=args.resume_from,
        save_best=not args.no_save_best, use_cv=args.use_cv, n_splits=args.n_splits, random_state=args.random_state,
        early_stopping_patience=args.early_stopping_patience, early_stopping_min_delta=args.early_stopping_min_delta,
        early_stopping_monitor=args.early_stopping_monitor, balanced_sampling=args.balanced_sampling,
        pretrained=not args.no_pretrained,
    )


def select_gpu(gpu_id: int) -> None:
    """Honour ``--gpu-id`` in a single-process run by narrowing CUDA_VISIBLE_DEVICES (an index into
    the devices already visible). Under ``accelerate launch`` the launcher assigns the devices."""
    launched = "LOCAL_RANK" in os.environ or "ACCELERATE_MIXED_PRECISION" in os.environ
    if launched:
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


# ------------------------------------------------------------------------------------ one run
def _best_epoch(history: list[dict], key: str, mode: str) -> int:
    values = np.array([epoch[key] for epoch in history], dtype=np.float64)
    return int(np.nanargmax(values) if mode == "max" else np.nanargmin(values)) + 1  # first occurrence, as the engine


def make_engine(cfg: ClipTrainConfig, data: ClassFolderData, train_idx: np.ndarray, val_idx: np.ndarray,
                run_dir: Path) -> Engine:
    """A fresh model (pretrained towers) on one split, wired to the shared engine (which refuses to resume
    a checkpoint trained on other classes)."""
    model, tokenizer = build_clip_model(cfg.image_encoder_name, cfg.text_encoder_name, cfg.embed_dim,
                                        cfg.temperature, cfg.img_size, pretrained_image=cfg.pretrained)
    if process_state().is_main_process:
        tokenizer.save_pretrained(run_dir / TEXT_ENCODER_DIR)
        model.text_encoder.config.save_pretrained(run_dir / TEXT_ENCODER_DIR)
    train_set = data.subset(train_idx, build_image_transform(cfg.img_size, True, cfg.augmentation))
    return Engine(
        engine_config(cfg, str(run_dir)), model,
        ZeroShotCLIPTask(tokenize(tokenizer, data.class_texts), data.class_names),
        train_set, data.subset(val_idx, build_image_transform(cfg.img_size, False)),
        output_dir=run_dir, checkpoint_dir=run_dir, callbacks=[GuideHistoryWriter(run_dir)],
        checkpoint_extra={"class_to_idx": data.class_to_idx,
                          "class_texts": dict(zip(data.class_names, data.class_texts)), "config": asdict(cfg),
                          "text_encoder_dir": TEXT_ENCODER_DIR},
        sample_weights=class_balanced_weights(train_set.labels) if cfg.balanced_sampling else None,
    )


def train_split(cfg: ClipTrainConfig, data: ClassFolderData, train_idx: np.ndarray, val_idx: np.ndarray,
                run_dir: Path) -> dict[str, Any]:
    """Train on one split, report the best checkpoint (or the final model) on its validation part,
    and return the run's summary (the per-fold row of cv_summary.json)."""
    engine = make_engine(cfg, data, train_idx, val_idx, run_dir)
    history = engine.fit()
    best_epoch = _best_epoch(history, *MONITORS[cfg.early_stopping_monitor])
    if cfg.save_best:
        engine.load_best(use_ema=False)
    title = f"best checkpoint, epoch {best_epoch}" if cfg.save_best else f"final model, epoch {len(history)}"
    metrics, outputs = engine.evaluate(engine.val_loader)
    if process_state().is_main_process:
        write_evaluation_report(metrics, outputs, data.class_names, run_dir, title)
    engine.close()
    last = history[-1]
    return {
        "epochs_trained": len(history),
        "train_loss": last["train/loss"], "train_acc": last["train/acc"],
        "val_loss": last["val/loss"], "val_acc": last["val/acc"],
        "best_val_acc": max(epoch["val/acc"] for epoch in history),
        "best_epoch": best_epoch,
        "best_model_val_acc": metrics["acc"], "best_model_val_auc": metrics["auc"],
        "best_model_val_loss": metrics["loss"], "temperature": last["train/temperature"],
    }


def run_config(cfg: ClipTrainConfig) -> dict[str, Any]:
    """One configuration: a single split, or K folds with a fresh model each."""
    cfg.validate()
    if cfg.use_cv and cfg.resume_from:
        raise ValueError("--resume-from continues a single run; with --use-cv start the folds afresh")
    data = ClassFolderData.scan(cfg.data_dir, cfg.class_texts_file, cfg.text_template)
    out = Path(cfg.output_dir)
    if process_state().is_main_process:
        write_json(out / "config.json", asdict(cfg))
        write_json(out / "class_texts.json", dict(zip(data.class_names, data.class_texts)))
    logger.info("%d images in %d classes %s", len(data.labels), len(data.class_names), data.class_names)

    if not cfg.use_cv:
        train_idx, val_idx = train_val_split(data.labels, cfg.val_fraction, cfg.random_state)
        return train_split(cfg, data, train_idx, val_idx, out)

    results = []
    for fold, (train_idx, val_idx) in enumerate(cross_validation_folds(data.labels, cfg.n_splits, cfg.random_state), 1):
        logger.info("fold %d/%d: %d train, %d val images", fold, cfg.n_splits, len(train_idx), len(val_idx))
        results.append({"fold": fold, **train_split(cfg, data, train_idx, val_idx, out / f"fold_{fold}")})
    summary = summarize_folds(results)
    if process_state().is_main_process:
        write_json(out / "cv_summary.json", summary)
    for key in ("val_acc", "best_val_acc", "best_model_val_auc"):
        logger.info("CV %s: %s", key, summary["mean_std"][key])
    return summary


# ----------------------------------------------------------------------------------- multi-config
def read_config_file(path: str | None) -> list[dict]:
    if not path:
        raise ConfigError("--multi-config needs --config-file (a JSON list of config dicts)")
    entries = read_json(path, "config file", ConfigError)
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"config file {path} must hold a non-empty JSON list of objects")
    return entries


def run_name(index: int, cfg: ClipTrainConfig) -> str:
    """``01_resnet50_bert-base-chinese``: a folder per entry, unique through its index."""
    text = Path(cfg.text_encoder_name.rstrip("/")).name
    return re.sub(r"[^\w.-]+", "_", f"{index:02d}_{cfg.image_encoder_name}_{text}")


def run_multi_config(base: ClipTrainConfig, entries: Sequence[dict]) -> list[dict]:
    """Each entry overrides the command-line settings and trains into its own folder."""
    configs = []
    for index, entry in enumerate(entries, 1):
        try:
            cfg = config_from_dict(ClipTrainConfig, {**asdict(base), "resume_from": None, **entry})
        except ConfigError as err:
            raise ConfigError(f"config file entry {index}: {err}") from None
        if "output_dir" not in entry:
            cfg.output_dir = str(Path(base.output_dir) / run_name(index, cfg))
        try:
            cfg.validate()  # every entry before the first one trains
        except ValueError as err:
            raise ConfigError(f"config file entry {index}: {err}") from None
        if cfg.gpu_id != base.gpu_id:
            logger.warning("config file entry %d: gpu_id %d ignored; this process runs on --gpu-id %d",
                           index, cfg.gpu_id, base.gpu_id)
        configs.append(cfg)
    results = []
    for index, cfg in enumerate(configs, 1):
        logger.info("config %d/%d -> %s", index, len(configs), cfg.output_dir)
        results.append({"output_dir": cfg.output_dir, "config": asdict(cfg), "results": run_config(cfg)})
    if process_state().is_main_process:
        write_json(Path(base.output_dir) / "multi_config_summary.json", results)
    return results


def main(argv: Sequence[str] | None = None) -> Any:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    base = config_from_args(args)
    select_gpu(base.gpu_id)  # once: a process cannot change its CUDA device set later
    if args.multi_config:
        return run_multi_config(base, read_config_file(args.config_file))
    return run_config(base)


if __name__ == "__main__":
    main()
