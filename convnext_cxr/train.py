"""Train the ChestX-ray14 classifier.

    accelerate launch convnext_cxr/train.py [--config FILE] [--train.lr 3e-4 | --set train.lr=3e-4 ...] [--help]

Trains on the training split with validation every epoch (raw and EMA weights) and early-stops on the
validation macro AUROC. Then the shared evaluation takes the best EMA model over validation and test
(thresholds tuned on validation; ``results/``), and the model is exported (``export/``) for predict.py.
"""
from __future__ import annotations

from typing import Sequence

from accelerate.utils import set_seed

from convnext_cxr.config import parse_config
from convnext_cxr.dataset import build_datasets
from convnext_cxr.loss import build_criterion
from convnext_cxr.model import build_model, export_architecture
from shared import Engine, ImageNormalize, MultiLabelTask, evaluate_best, export_model, process_state, run_cli
from shared.cxr14 import cxr_preprocessing, format_finding_table


def main(argv: Sequence[str] | None = None) -> dict:
    """Train, evaluate and export; returns ``shared.evaluate_best``'s ``{"splits": ..., "thresholds": ...}``."""
    cfg = parse_config(argv)
    set_seed(cfg.train.seed)
    with process_state().main_process_first():
        splits = build_datasets(cfg.data, cfg.train.output_dir, cfg.train.seed)
    model = build_model(cfg.model, num_labels=len(splits.findings))
    task = MultiLabelTask(build_criterion(cfg.loss, splits.train.records.labels), splits.findings,
                          input_transform=ImageNormalize() if cfg.data.normalize_on_device else None)
    engine = Engine(cfg.train, model, task, splits.train, splits.val, held_out=splits.held_out(), run_config=cfg,
                    project_name="convnext_cxr")
    engine.accelerator.print(f"train {len(splits.train)} / val {len(splits.val)} / test {len(splits.test)} images, "
                             f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
                             f"on {engine.accelerator.num_processes} processes")
    engine.fit()
    results = evaluate_best(engine, splits.evaluation_sets())
    best = engine.load_best(use_ema=cfg.train.ema)
    if engine.accelerator.is_main_process:
        export_model(best, engine.output_dir / "export", project="convnext_cxr",
                     architecture=export_architecture(cfg.model, len(splits.findings)), class_names=splits.findings,
                     task="multi-label", preprocessing=cxr_preprocessing(cfg.data.image_size),
                     thresholds=results["thresholds"])
        if "test" in results["splits"]:
            print("test, best EMA model, thresholds tuned on validation\n"
                  + format_finding_table(results["splits"]["test"], splits.findings))
    engine.close()
    return results


if __name__ == "__main__":
    run_cli(main)
