"""Train the ChestX-ray14 classifier.

    accelerate launch convnext_cxr/train.py [--config FILE] [--train.lr 3e-4 | --set train.lr=3e-4 ...]

Trains on the training split with validation every epoch (raw and EMA weights), early-stops on the
validation macro AUROC, then evaluates the best EMA model on the test split with thresholds tuned on
validation and writes ``results/`` and an inference export next to the checkpoints.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate.utils import set_seed

from convnext_cxr.dataset import CXRSplits, DataConfig, build_datasets
from convnext_cxr.loss import LossConfig, build_criterion
from convnext_cxr.model import ModelConfig, build_model
from shared import (EarlyStoppingConfig, config_to_dict, Engine, ImageNormalize, MultiLabelTask, TrainConfig, export_model,
                    load_config, multilabel_metrics, plot_pr_curves, process_state, plot_roc_curves, plot_training_curves,
                    tune_thresholds)

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")

#: The source document's config spellings, accepted in a YAML file and on the command line.
SOURCE_KEY_ALIASES = {
    "learning_rate": "train.lr", "train.learning_rate": "train.lr",
    "num_epochs": "train.epochs", "train.num_epochs": "train.epochs",
    "batch_size": "train.batch_size", "loss_type": "loss.loss_type",
}


def _default_train() -> TrainConfig:
    return TrainConfig(output_dir="runs/convnext_cxr",
                       early_stopping=EarlyStoppingConfig(monitor="val/macro_auroc", mode="max", patience=10))


@dataclass
class CXRConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=_default_train)


def parse_config(argv: Sequence[str] | None) -> CXRConfig:
    parser = argparse.ArgumentParser(
        description="Train ConvNeXt + attention heads on ChestX-ray14 (14 findings).",
        epilog="Override any config key: --train.lr 3e-4, --data.image_size 384 or --set train.epochs=50")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    args, overrides = parser.parse_known_args(argv)
    return load_config(CXRConfig, args.config, overrides, aliases=SOURCE_KEY_ALIASES)


def evaluate_on_test(engine: Engine, splits: CXRSplits, use_ema: bool) -> dict:
    """Best (EMA) weights: thresholds tuned on validation, metrics on test; results/ written."""
    engine.load_best(use_ema=use_ema)
    _, val_out = engine.evaluate(splits.val, use_ema=use_ema)
    thresholds = tune_thresholds(val_out["targets"], torch.sigmoid(torch.from_numpy(val_out["logits"])).numpy())
    _, test_out = engine.evaluate(splits.test, use_ema=use_ema)
    probs = torch.sigmoid(torch.from_numpy(test_out["logits"])).numpy()
    metrics = multilabel_metrics(test_out["targets"], probs, splits.findings, thresholds)
    engine.log({f"test/{k}": v for k, v in metrics.items()})
    if engine.accelerator.is_main_process:
        write_results(engine, splits.findings, test_out["targets"], probs, metrics, thresholds)
    return metrics


def write_results(engine: Engine, findings: list[str], targets: np.ndarray, probs: np.ndarray,
                  metrics: dict, thresholds: np.ndarray) -> None:
    results = engine.output_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "test_metrics.json").write_text(json.dumps(
        {**metrics, "thresholds": dict(zip(findings, map(float, thresholds)))}, indent=2))
    rows = ["finding,positives,auroc,ap,f1_at_0.5,threshold,sensitivity,specificity"]
    for i, name in enumerate(findings):
        rows.append(f"{name},{int(targets[:, i].sum())},{metrics[f'auroc/{name}']:.4f},{metrics[f'ap/{name}']:.4f},"
                    f"{metrics[f'f1/{name}']:.4f},{thresholds[i]:.4f},{metrics[f'sensitivity/{name}']:.4f},"
                    f"{metrics[f'specificity/{name}']:.4f}")
    rows.append(f"macro,{int(targets.sum())},{metrics['macro_auroc']:.4f},{metrics['macro_ap']:.4f},"
                f"{metrics['macro_f1']:.4f},,{metrics['macro_sensitivity']:.4f},{metrics['macro_specificity']:.4f}")
    (results / "per_finding_auroc.csv").write_text("\n".join(rows) + "\n")
    plot_training_curves(engine.history, results / "training_curves.png",
                         keys=["train/loss", "val/loss", "val_ema/loss", "val/macro_auroc", "val_ema/macro_auroc",
                               "train/lr"])
    plot_roc_curves(targets, probs, findings, results / "roc_curves.png", title="Test ROC (best EMA model)")
    plot_pr_curves(targets, probs, findings, results / "pr_curves.png", title="Test precision-recall")
    model = engine.ema.module if engine.ema is not None else engine.accelerator.unwrap_model(engine.model)
    export_model(model, engine.output_dir / "export", class_names=findings, thresholds=thresholds.tolist(),
                 config=config_to_dict(engine.run_config))
    print("\n".join(f"  {row}" for row in rows))


def main(argv: Sequence[str] | None = None) -> dict:
    cfg = parse_config(argv)
    set_seed(cfg.train.seed)
    with process_state().main_process_first():
        splits = build_datasets(cfg.data, cfg.train.output_dir, cfg.train.seed)
    model = build_model(cfg.model, num_labels=len(splits.findings))
    task = MultiLabelTask(build_criterion(cfg.loss, splits.train.records.labels), splits.findings,
                          input_transform=ImageNormalize() if cfg.data.normalize_on_device else None)
    engine = Engine(cfg.train, model, task, splits.train, splits.val, run_config=cfg, project_name="convnext_cxr")
    engine.accelerator.print(f"train {len(splits.train)} / val {len(splits.val)} / test {len(splits.test)} images, "
                             f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
                             f"on {engine.accelerator.num_processes} processes")
    engine.fit()
    metrics = evaluate_on_test(engine, splits, use_ema=cfg.train.ema)
    engine.close()
    return metrics


if __name__ == "__main__":
    main()
