"""Train HybridMedNet on ChestX-ray14 with the shared Engine.

    python hybridmednet/train.py [--config FILE.yaml] [--TRAIN.epochs 10 | --set MODEL.backbone=swin_tiny ...] [--help]
    accelerate launch --multi_gpu --num_processes 8 hybridmednet/train.py --config FILE.yaml

``train`` is the shared engine's section (warmup, AMP, gradient accumulation, early stopping, EMA,
checkpoints, TensorBoard); the guide's TRAIN keys are its other spellings (``configs/default_config.py``).
LOSS builds the finding loss (pos_weight) and, with MODEL.hierarchical, the coarse + fine + consistency
loss. After training the shared evaluation takes the best checkpoint over validation and test
(``results/``) and the model is exported (``export/``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from accelerate.utils import set_seed
from torch.utils.data import Dataset

from shared import Callback, Engine, config_to_dict, evaluate_best, export_model, parse_cli, process_state, run_cli
from shared.cxr14 import FINDINGS, cxr_preprocessing, format_finding_table

from hybridmednet.configs.default_config import SOURCE_ALIASES, Config
from hybridmednet.data import build_datasets
from hybridmednet.losses import HierarchicalLoss, build_finding_loss, membership_matrix
from hybridmednet.models.hybrid_med_net import HybridMedNet
from hybridmednet.task import HybridMedNetTask


def build_task(config: Config, train_labels: np.ndarray) -> HybridMedNetTask:
    finding_loss = build_finding_loss(config.LOSS, train_labels)
    if not config.MODEL["hierarchical"]:
        return HybridMedNetTask(finding_loss, FINDINGS)
    groups = config.MODEL["coarse_groups"]
    hierarchy = HierarchicalLoss(finding_loss, membership_matrix(groups, FINDINGS), config.LOSS["coarse_weight"],
                                 config.LOSS["fine_weight"], config.LOSS["consistency_weight"])
    return HybridMedNetTask(finding_loss, FINDINGS, hierarchy, list(groups))


def build_engine(config: Config, train_set: Dataset, val_set: Dataset | None, train_labels: np.ndarray,
                 callbacks: Sequence[Callback] = (), held_out: Mapping[str, Dataset] | None = None) -> Engine:
    """Model, task and Engine from the config (the datasets are built by the caller; ``held_out``, e.g. the
    test split, is only checked by the preflight)."""
    set_seed(config.train.seed)  # the model's random initialisation is part of the run's recipe
    return Engine(config.train, HybridMedNet(config), build_task(config, train_labels), train_set, val_set,
                  callbacks=callbacks, run_config=config, held_out=held_out)


def export_best(engine: Engine, config: Config, thresholds: np.ndarray | None) -> None:
    """Write ``export/`` (the best, or best EMA, weights; the MODEL section; tuned thresholds). Every process
    calls it; the main process writes."""
    best = engine.load_best(use_ema=config.train.ema)
    if engine.accelerator.is_main_process:
        export_model(best, engine.output_dir / "export", project="hybridmednet",
                     architecture=config_to_dict(config.MODEL), class_names=FINDINGS,
                     task="multi-label", preprocessing=cxr_preprocessing(config.DATA["image_size"]),
                     thresholds=thresholds)


def main(argv: Sequence[str] | None = None) -> dict:
    """Train, evaluate and export; returns ``shared.evaluate_best``'s ``{"splits": ..., "thresholds": ...}``."""
    config = parse_cli(Config, argv, description="Train HybridMedNet on ChestX-ray14 (14 findings); evaluate the "
                       "best checkpoint on validation and test (results/) and export it (export/).",
                       aliases=SOURCE_ALIASES)
    # process_state, not a bare PartialState: on a CPU machine only it joins torchrun's processes into one
    # gloo group (a bare one leaves each process alone, all writing the same run folder)
    with process_state().main_process_first():  # one process writes the demo set
        splits = build_datasets(config)
    engine = build_engine(config, splits.train, splits.val if len(splits.val) else None,
                          splits.train.records.labels, held_out=splits.held_out())
    engine.accelerator.print(f"{config.MODEL['backbone']}: {len(splits.train)} train / {len(splits.val)} val / "
                             f"{len(splits.test)} test images on {engine.accelerator.num_processes} processes")
    engine.fit()
    results = evaluate_best(engine, splits.evaluation_sets())
    export_best(engine, config, results["thresholds"])
    engine.close()
    for name, title in (("val", "validation AUROC (best checkpoint)"), ("test", "test (thresholds tuned on validation)")):
        if name in results["splits"]:
            engine.accelerator.print(f"{title}\n" + format_finding_table(results["splits"][name], FINDINGS))
    return results


if __name__ == "__main__":
    run_cli(main)
