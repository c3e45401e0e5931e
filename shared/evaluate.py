"""External validation of any project's export on labelled data it never saw: one command, one report.

    python -m shared.evaluate --model runs/convnext_v2/export --data other_site/ [--out report/]
    python -m shared.evaluate --model runs/convnext_cxr/export --data labels.csv --images images/
    accelerate launch -m shared.evaluate --model ... --data ...      (each sample scored exactly once)

``--data`` is what the project trains on (:mod:`shared.external_data`: class folders of images or NIfTI
volumes, NIH's label CSV with ``--images``, or a ``path,label`` manifest). Every file is opened before the
first one is scored, so a bad input ends in one line and no partial report. The report folder gets
``metrics.json`` (with 95 % confidence intervals: DeLong and a seeded stratified bootstrap for AUROC,
bootstrap for sensitivity, specificity, accuracy and F1 at the exported threshold), ``per_class.csv``,
``predictions.csv`` (path, true label, every probability), ROC and PR curves with bootstrap bands, a
reliability diagram with ECE and Brier score, confusion matrices at the exported and the Youden thresholds,
and ``report.html``, one self-contained page (:mod:`shared.report`).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .accelerator import process_state
from .cli import parse_cli, run_cli
from .case_heatmaps import pick_cases, save_case_figures
from .config import ConfigError
from .data import DataError, single_threaded_worker
from .evaluation import class_probabilities, write_split_results
from .export import export_thresholds, load_export, project_input_reader
from .heatmaps import find_target_layer, logits_of
from .inference import image_reader
from .external_data import external_samples
from .preflight import find_bad_files, unreadable_files_error
from .report import write_report
from .stats import (bootstrap_auroc_ci, bootstrap_threshold_cis, calibration, delong_ci, pr_band, roc_band,
                    youden_threshold)


@dataclass
class EvaluateConfig:
    model: str = ""  # an export folder (model.safetensors + model.json) that a project's train.py wrote
    data: str = ""  # labelled data: class folders, NIH-style label CSV (with --images), or a path,label manifest
    images: str = ""  # the image folder of a label CSV (searched recursively)
    out: str = "report"  # the report folder; refused when it holds files (a report only with --overwrite true)
    overwrite: bool = False  # replace an existing report in --out
    batch_size: int = 32  # samples per forward pass and process
    num_workers: int = 2  # loader worker processes per process
    bootstrap: int = 1000  # bootstrap resamples for the confidence intervals and curve bands
    seed: int = 0  # seeds the bootstrap (the same seed gives the same intervals)
    positive_class: str = ""  # multi-class with two classes: the positive class (default: the second)
    heatmaps: int = 0  # > 0: Grad-CAM figures of the N most confident correct and N most confident wrong cases
    cpu: bool = False  # score on the CPU even when a GPU is visible


class ScoredFiles(Dataset):
    """(input tensor, index) per file: the index lets gathered outputs be matched to their files."""

    def __init__(self, paths: Sequence[Path], read: Callable[[Path], torch.Tensor]):
        self.paths, self.read = list(paths), read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.read(self.paths[index]), index


@torch.no_grad()
def score(model: torch.nn.Module, dataset: Dataset, cfg: EvaluateConfig, num_classes: int) -> np.ndarray:
    """Logits of every sample, in dataset order, each scored once across the processes."""
    accelerator = Accelerator(cpu=cfg.cpu)
    model = model.to(accelerator.device).eval()
    loader = accelerator.prepare(DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                            worker_init_fn=single_threaded_worker))
    logits, indices = [], []
    for inputs, index in tqdm(loader, desc="scoring", disable=not accelerator.is_main_process, leave=False):
        with accelerator.autocast():
            out = logits_of(model(inputs), num_classes).float()
        out, index = accelerator.gather_for_metrics((out, index))
        logits.append(out.cpu())
        indices.append(index.cpu())
    order = torch.cat(indices).argsort()
    return torch.cat(logits)[order].numpy()


def interval_table(task: str, class_names: Sequence[str], targets: np.ndarray, probs: np.ndarray,
                   thresholds: np.ndarray, cfg: EvaluateConfig, positive: int | None) -> dict[str, Any]:
    """Per class (multi-label; one class against the rest for more than two classes) or for the positive class
    (two classes): AUROC with DeLong and bootstrap CIs, sensitivity, specificity, accuracy and F1 with bootstrap
    CIs at the exported threshold (0.5 without one; the argmax decision for more than two classes, where a
    fixed probability cut means little) and at the Youden threshold, calibration."""
    columns = [positive] if positive is not None else range(len(class_names))
    one_vs_rest = task != "multi-label" and positive is None
    table = {}
    for c in columns:
        y = targets[:, c] if task == "multi-label" else (targets == c).astype(int)
        p = probs[:, c]
        decision, cut = ((probs.argmax(1) == c).astype(float), 0.5) if one_vs_rest else (p, thresholds[c])
        youden = youden_threshold(y, p)
        table[class_names[c]] = {
            "auroc_delong": delong_ci(y, p), "auroc_bootstrap": bootstrap_auroc_ci(y, p, cfg.bootstrap, cfg.seed),
            "threshold": None if one_vs_rest else float(cut),
            "at_threshold": bootstrap_threshold_cis(y, decision, cut, cfg.bootstrap, cfg.seed),
            "youden_threshold": youden, "at_youden": bootstrap_threshold_cis(y, p, youden, cfg.bootstrap, cfg.seed),
            "calibration": calibration(y, p), "roc_band": roc_band(y, p, cfg.bootstrap, cfg.seed),
            "pr_band": pr_band(y, p, cfg.bootstrap, cfg.seed),
        }
    return table


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Score ``--data`` with ``--model`` and write the report; returns ``metrics.json``'s content."""
    cfg = parse_cli(EvaluateConfig, argv, description="External validation of an exported model: metrics with "
                    "confidence intervals, calibration and a self-contained report.html.")
    if not cfg.model or not cfg.data:
        raise DataError("give the export folder and the labelled data: --model EXPORT_DIR --data DATA")
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not (out / "metrics.json").is_file():
            raise DataError(f"--out {out} holds files that are not a report; choose an empty or new folder")
        if not cfg.overwrite:
            raise DataError(f"{out} already holds a report; pass --overwrite true to replace it, or choose another --out")
    model, info = load_export(cfg.model)
    paths, targets = external_samples(cfg.data, info, cfg.images or None)
    state = process_state()
    bad = find_bad_files(paths, progress=state.is_main_process, description="opening every file")
    if bad:
        raise unreadable_files_error(bad, len(paths))
    read = project_input_reader(info) or image_reader(info["preprocessing"])
    if cfg.heatmaps > 0:  # before scoring: a model without a feature map to explain fails now, not at the end
        try:
            find_target_layer(model, read(paths[0])[None])
        except ValueError as err:
            raise ConfigError(f"--heatmaps {cfg.heatmaps}: {err}; run without --heatmaps") from None
    task, class_names = info["task"], list(info["class_names"])
    positive = None
    if task != "multi-label" and len(class_names) == 2:
        if cfg.positive_class and cfg.positive_class not in class_names:
            raise ConfigError(f"--positive_class {cfg.positive_class!r} is not one of the model's classes {class_names}")
        positive = class_names.index(cfg.positive_class) if cfg.positive_class else 1
    logits = score(model, ScoredFiles(paths, read), cfg, len(class_names))
    probs = class_probabilities(task, logits)
    thresholds = np.asarray(export_thresholds(info), dtype=np.float64)
    if not state.is_main_process:
        return {}
    partial = out.parent / f".{out.name}.partial"  # the report appears whole or not at all
    shutil.rmtree(partial, ignore_errors=True)
    try:
        metrics = write_report_folder(partial, cfg, info, model, read, paths, targets, probs, thresholds, positive)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():  # --overwrite (checked above)
        shutil.rmtree(out)
    partial.rename(out)
    print(f"report written to {out / 'report.html'}")
    return metrics


def write_report_folder(partial: Path, cfg: EvaluateConfig, info: Mapping[str, Any], model: torch.nn.Module,
                        read: Callable[[Path], torch.Tensor], paths: Sequence[Path], targets: np.ndarray,
                        probs: np.ndarray, thresholds: np.ndarray, positive: int | None) -> dict[str, Any]:
    """Every file of the report into ``partial``; returns the metrics."""
    task, class_names = info["task"], list(info["class_names"])
    intervals = interval_table(task, class_names, targets, probs, thresholds, cfg, positive)
    metrics = write_split_results(partial, "", task_type=task, class_names=class_names, targets=targets, probs=probs,
                                  sample_ids=[str(p) for p in paths],
                                  thresholds=thresholds if task == "multi-label" else None, positive_class=positive,
                                  extra={"model": str(cfg.model), "data": str(cfg.data), "samples": len(paths),
                                         "bootstrap_resamples": cfg.bootstrap, "seed": cfg.seed,
                                         "confidence_intervals": {k: {m: v for m, v in row.items() if m not in
                                                                      ("roc_band", "pr_band")}
                                                                  for k, row in intervals.items()}})
    cases = []
    if cfg.heatmaps > 0:
        picked = pick_cases(task, targets, probs, cfg.heatmaps)
        cases = save_case_figures(model.cpu(), read, paths, picked, class_names, info["preprocessing"],
                                  lambda output: logits_of(output, len(class_names)), partial / "heatmaps")
    write_report(partial, info=info, cfg=cfg, metrics=metrics, intervals=intervals, targets=targets, probs=probs,
                 cases=cases)
    return metrics


if __name__ == "__main__":
    run_cli(main)
