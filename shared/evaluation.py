"""One evaluation path for every project: the best weights on every split, the same files everywhere.

For each split name (``val``, ``test``, ...) :func:`evaluate_best` writes into ``<run>/results/``:

* ``<split>_metrics.json``: every metric (NaN -> null), the task's own figures (e.g. its loss) and the
  thresholds used;
* ``<split>_per_class.csv``: one row per class (AUROC, AP, F1, sensitivity, specificity, ...);
* ``<split>_predictions.csv``: one row per sample: its id, true label(s), prediction, every probability;
* ``<split>_roc.png``, ``<split>_pr.png``, ``<split>_confusion.png``;

plus ``training_curves.png``. Multi-label thresholds are tuned for F1 on the ``tune_on`` split and then
used on every split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import write_csv, write_json
from .metrics import class_counts, multiclass_metrics, multilabel_metrics, tune_thresholds
from .plots import (plot_confusion_matrix, plot_multilabel_confusion, plot_pr_curves, plot_roc_curves,
                    plot_training_curves)


def class_probabilities(task_type: str, logits: np.ndarray) -> np.ndarray:
    """Sigmoid per class for multi-label, softmax over classes for multi-class and zero-shot."""
    logits_t = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    return (torch.sigmoid(logits_t) if task_type == "multi-label" else torch.softmax(logits_t, dim=1)).numpy()


def split_metrics(task_type: str, targets: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                  thresholds: np.ndarray | None = None, positive_class: int | None = None) -> dict[str, Any]:
    if task_type == "multi-label":
        return multilabel_metrics(targets, probs, class_names, thresholds)
    return multiclass_metrics(targets, probs, class_names, positive_class)


def _per_class_rows(metrics: Mapping[str, Any], class_names: Sequence[str], targets: np.ndarray,
                    thresholds: np.ndarray | None) -> tuple[list[str], list[list[Any]]]:
    """Columns are every ``<metric>/<class>`` key the metrics hold, in their order."""
    names = [key.rsplit("/", 1)[0] for key in metrics if "/" in key and key.rsplit("/", 1)[1] == class_names[0]]
    counts = class_counts(targets, len(class_names))
    header = ["class", "positives" if np.asarray(targets).ndim == 2 else "support", *names]
    header += ["threshold"] if thresholds is not None else []
    rows = []
    for c, name in enumerate(class_names):
        row = [name, int(counts[c]), *(metrics[f"{m}/{name}"] for m in names)]
        rows.append(row + ([float(thresholds[c])] if thresholds is not None else []))
    return header, rows


def write_split_results(results_dir: str | Path, split: str, *, task_type: str, class_names: Sequence[str],
                        targets: np.ndarray, probs: np.ndarray, sample_ids: Sequence[str] | None = None,
                        thresholds: np.ndarray | None = None, positive_class: int | None = None,
                        extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Metrics of one split, and its JSON, CSV and PNG files (``<split>_metrics.json``, ...; without a split
    name ``metrics.json``, ...); returns the metrics."""
    results_dir, prefix = Path(results_dir), f"{split}_" if split else ""
    targets, probs = np.asarray(targets), np.asarray(probs, dtype=np.float64)
    class_names = list(class_names)
    metrics = split_metrics(task_type, targets, probs, class_names, thresholds, positive_class)
    payload = {**(extra or {}), **metrics}  # on a clash the figures computed here win
    if thresholds is not None:
        payload["thresholds"] = dict(zip(class_names, map(float, thresholds)))
    write_json(results_dir / f"{prefix}metrics.json", payload)
    write_csv(results_dir / f"{prefix}per_class.csv", *_per_class_rows(metrics, class_names, targets, thresholds))

    ids = list(sample_ids) if sample_ids is not None else [str(i) for i in range(len(probs))]
    if len(ids) != len(probs):
        raise ValueError(f"{split or 'data'}: {len(ids)} sample ids for {len(probs)} predictions")
    if task_type == "multi-label":
        cut = np.full(len(class_names), 0.5) if thresholds is None else np.asarray(thresholds)
        predicted = probs >= cut
        true_text = ["|".join(n for n, t in zip(class_names, row) if t) for row in targets.astype(bool)]
        pred_text = ["|".join(n for n, p in zip(class_names, row) if p) for row in predicted]
    else:
        predicted = probs.argmax(1)
        true_text = [class_names[int(t)] for t in targets]
        pred_text = [class_names[int(p)] for p in predicted]
    write_csv(results_dir / f"{prefix}predictions.csv",
              ["sample", "true", "predicted", *(f"prob_{name}" for name in class_names)],
              ([i, t, p, *row] for i, t, p, row in zip(ids, true_text, pred_text, probs)),
              digits=9)  # every float32 probability exactly: metrics recomputed from the file add no ties

    plot_roc_curves(targets, probs, class_names, results_dir / f"{prefix}roc.png", title=f"ROC ({split or 'all'})")
    plot_pr_curves(targets, probs, class_names, results_dir / f"{prefix}pr.png", title=f"Precision-recall ({split or 'all'})")
    if task_type == "multi-label":
        plot_multilabel_confusion(targets, predicted, class_names, results_dir / f"{prefix}confusion.png",
                                  title=f"Confusion per class at the thresholds ({split or 'all'})")
    else:
        plot_confusion_matrix(metrics["confusion_matrix"], class_names, results_dir / f"{prefix}confusion.png",
                              title=f"Confusion matrix ({split or 'all'})")
    return metrics


def dataset_sample_ids(dataset: Dataset) -> list[str] | None:
    """A dataset's per-sample ids (``sample_ids`` attribute, e.g. file paths), in index order."""
    ids = getattr(dataset, "sample_ids", None)
    return [str(i) for i in ids] if ids is not None else None


def evaluate_best(engine, splits: Mapping[str, Dataset], *, tune_on: str | None = "val",
                  use_ema: bool | None = None, positive_class: int | None = None) -> dict[str, Any]:
    """Load the best (EMA) weights, evaluate every split, write ``results/``; returns
    ``{"splits": {split: metrics}, "thresholds": array or None}``. Every process must call it; only the main
    process writes."""
    task_type = engine.task.task_type
    class_names = list(engine.task.class_names)
    use_ema = engine.cfg.ema if use_ema is None else use_ema
    engine.load_best(use_ema=use_ema)
    evaluated = {name: engine.evaluate(dataset, use_ema=use_ema) for name, dataset in splits.items()}
    outputs = {name: out for name, (_, out) in evaluated.items()}
    probs = {name: class_probabilities(task_type, out["logits"]) for name, out in outputs.items()}
    thresholds = None
    if task_type == "multi-label" and tune_on in outputs:
        thresholds = tune_thresholds(outputs[tune_on]["targets"], probs[tune_on])
    results_dir = engine.output_dir / "results"
    by_split = {}
    for name, dataset in splits.items():
        task_metrics = evaluated[name][0]  # the task's own figures (loss, hierarchical heads, ...)
        if engine.accelerator.is_main_process:
            metrics = write_split_results(results_dir, name, task_type=task_type, class_names=class_names,
                                          targets=outputs[name]["targets"], probs=probs[name],
                                          sample_ids=dataset_sample_ids(dataset), thresholds=thresholds,
                                          positive_class=positive_class, extra=task_metrics)
        else:
            metrics = split_metrics(task_type, outputs[name]["targets"], probs[name], class_names, thresholds,
                                    positive_class)
        metrics = {**task_metrics, **metrics}
        engine.log({f"{name}/{k}": v for k, v in metrics.items()})
        by_split[name] = metrics
    if engine.accelerator.is_main_process and engine.history:
        plot_training_curves(engine.history, results_dir / "training_curves.png")
    engine.accelerator.wait_for_everyone()
    return {"splits": by_split, "thresholds": thresholds}
