"""Train HybridMedNet on ChestX-ray14 with the shared Engine.

    python hybridmednet/train.py [--config FILE.yaml] [--set TRAIN.epochs=10 ...]
    accelerate launch --multi_gpu --num_processes 8 hybridmednet/train.py --config FILE.yaml

Every TRAIN / CHECKPOINT / LOGGING key maps onto the Engine (warmup, AMP, gradient accumulation,
early stopping, EMA, checkpoint frequency, TensorBoard); LOSS builds the finding loss (pos_weight)
and, with MODEL.hierarchical, the coarse + fine + consistency loss. After training, the best
checkpoint is evaluated on the validation and test splits (``final_metrics.json``, ROC curves).
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

import numpy as np
import torch
from accelerate.utils import set_seed
from torch.utils.data import Dataset

from shared import (Callback, EarlyStoppingConfig, Engine, TrainConfig, plot_roc_curves, plot_training_curves,
                    process_state)
from shared.cxr14 import FINDINGS

from hybridmednet.configs.default_config import Config
from hybridmednet.data import CXRSplits, build_datasets
from hybridmednet.losses import HierarchicalLoss, build_finding_loss, membership_matrix
from hybridmednet.models.hybrid_med_net import HybridMedNet
from hybridmednet.task import HybridMedNetTask


def engine_config(config: Config) -> TrainConfig:
    """Translate the guide's TRAIN / DATA / CHECKPOINT / LOGGING keys into the shared TrainConfig."""
    train, ckpt, log = config.TRAIN, config.CHECKPOINT, config.LOGGING
    return TrainConfig(
        output_dir=ckpt["save_dir"], epochs=train["epochs"], batch_size=train["batch_size"],
        num_workers=config.DATA["num_workers"], optimizer=train["optimizer"], lr=train["learning_rate"],
        min_lr=train["min_lr"], weight_decay=train["weight_decay"], scheduler=train["lr_scheduler"],
        warmup_epochs=train["warmup_epochs"], grad_accum_steps=train["gradient_accumulation_steps"],
        grad_clip=train["grad_clip"], mixed_precision=train["amp_dtype"] if train["mixed_precision"] else "no",
        ema=train["ema"], ema_decay=train["ema_decay"], seed=train["seed"],
        early_stopping=EarlyStoppingConfig(monitor=train["early_stopping_monitor"],
                                           mode=train["early_stopping_mode"],
                                           patience=train["early_stopping_patience"]),
        resume=ckpt["resume"], resume_checkpoint=ckpt["resume_checkpoint"], save_every=ckpt["save_freq"],
        log_every=log["print_freq"], tracker="tensorboard" if log["tensorboard"] else "none",
    )


def build_task(config: Config, train_labels: np.ndarray) -> HybridMedNetTask:
    finding_loss = build_finding_loss(config.LOSS, train_labels)
    if not config.MODEL["hierarchical"]:
        return HybridMedNetTask(finding_loss, FINDINGS)
    groups = config.MODEL["coarse_groups"]
    hierarchy = HierarchicalLoss(finding_loss, membership_matrix(groups, FINDINGS), config.LOSS["coarse_weight"],
                                 config.LOSS["fine_weight"], config.LOSS["consistency_weight"])
    return HybridMedNetTask(finding_loss, FINDINGS, hierarchy, list(groups))


def build_engine(config: Config, train_set: Dataset, val_set: Dataset | None, train_labels: np.ndarray,
                 callbacks: Sequence[Callback] = ()) -> Engine:
    """Model, task and Engine from the config (the datasets are built by the caller)."""
    log_dir = config.LOGGING["log_dir"] or None
    set_seed(config.TRAIN["seed"])  # the model's random initialisation is part of the run's recipe
    return Engine(engine_config(config), HybridMedNet(config), build_task(config, train_labels), train_set,
                  val_set, callbacks=callbacks, run_config=config, log_dir=log_dir)


def final_evaluation(engine: Engine, splits: CXRSplits, use_ema: bool) -> dict:
    """Best checkpoint on validation and test; writes final_metrics.json and ROC curves."""
    engine.load_best(use_ema=use_ema)
    results = {}
    for name, dataset in (("val", splits.val), ("test", splits.test)):
        if len(dataset) == 0:
            continue
        metrics, outputs = engine.evaluate(dataset, use_ema=use_ema)
        results[name] = metrics
        if engine.accelerator.is_main_process:
            probs = torch.sigmoid(torch.from_numpy(outputs["logits"])).numpy()
            plot_roc_curves(outputs["targets"], probs, FINDINGS, engine.output_dir / f"roc_{name}.png",
                            title=f"HybridMedNet ROC ({name})")
    if engine.accelerator.is_main_process:
        (engine.output_dir / "final_metrics.json").write_text(json.dumps(results, indent=2))
        if engine.history:
            plot_training_curves(engine.history, engine.output_dir / "training_curves.png")
    return results


def format_auroc_table(metrics: dict) -> str:
    rows = [f"{name:<20} {metrics[f'auroc/{name}']:.3f}" for name in FINDINGS]
    return "\n".join(rows + [f"{'macro':<20} {metrics['macro_auroc']:.3f}"])


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description="Train HybridMedNet on ChestX-ray14.",
        epilog="Override any key: --set MODEL.backbone=swin_tiny --set TRAIN.epochs=10 (or --TRAIN.epochs 10)")
    parser.add_argument("--config", default=None, help="YAML file with MODEL/TRAIN/DATA/LOSS/... sections")
    args, overrides = parser.parse_known_args(argv)
    config = Config.load(args.config, overrides)
    # process_state, not a bare PartialState: on a CPU machine only it joins torchrun's processes into one
    # gloo group (a bare one leaves each process alone, all writing the same run folder)
    with process_state().main_process_first():  # one process writes the demo set
        splits = build_datasets(config)
    train_labels = splits.train.records.labels
    engine = build_engine(config, splits.train, splits.val if len(splits.val) else None, train_labels)
    engine.accelerator.print(f"{config.MODEL['backbone']}: {len(splits.train)} train / {len(splits.val)} val / "
                             f"{len(splits.test)} test images on {engine.accelerator.num_processes} processes")
    engine.fit()
    results = final_evaluation(engine, splits, use_ema=config.TRAIN["ema"])
    engine.close()
    if "val" in results:
        engine.accelerator.print("validation AUROC (best checkpoint)\n" + format_auroc_table(results["val"]))
    return results


if __name__ == "__main__":
    main()
