"""Metric selection, per-class reports and figures (PNG + TensorBoard image).

The numbers come from :func:`shared.multiclass_metrics`; this module decides which of them are logged
as scalars, how the per-class report looks, and turns the shared PNG plots into TensorBoard images.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from shared import multiclass_metrics, plot_confusion_matrix, plot_pr_curves, plot_roc_curves

PER_CLASS_FIELDS = ("precision", "recall", "f1", "specificity", "auc")


def compute_metrics(y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str], positive_index: int,
                    quiet: bool = False) -> dict[str, Any]:
    """:func:`shared.multiclass_metrics`; ``quiet`` hides the undefined-AUC warnings of tiny batches."""
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", RuntimeWarning)
        return multiclass_metrics(y_true, y_prob, class_names, positive_index)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The summary numbers worth a curve: everything but per-class entries (``name/class``), lists and NaN.

    Binary: ``recall``, ``precision``, ``specificity``, ``f1`` and ``auc`` are those of the positive class;
    always: ``accuracy``, ``balanced_accuracy``, ``{precision,recall,f1}_{macro,weighted}``,
    ``specificity_macro`` (and ``loss`` when present). Multi-class ``auc`` is the one-vs-rest macro mean.
    """
    return {k: float(v) for k, v in metrics.items()
            if "/" not in k and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def per_class_report(metrics: Mapping[str, Any], class_names: Sequence[str],
                     y_true: np.ndarray | None = None) -> dict[str, dict]:
    """``{class: {precision, recall, f1, specificity, auc, support}}`` in label order; the support counts
    ``y_true``, or the rows of the confusion matrix (true class) when no labels are given."""
    support = (np.bincount(np.asarray(y_true, dtype=np.int64), minlength=len(class_names)) if y_true is not None
               else np.asarray(metrics["confusion_matrix"]).sum(axis=1))
    return {name: {**{field: metrics[f"{field}/{name}"] for field in PER_CLASS_FIELDS}, "support": int(support[c])}
            for c, name in enumerate(class_names)}


def per_class_payload(metrics: Mapping[str, Any], class_names: Sequence[str], positive_class: str) -> dict[str, Any]:
    """The ``<split>_per_class_metrics.json`` content: per-class report and the labelled confusion matrix."""
    return {"classes": per_class_report(metrics, class_names), "positive_class": positive_class,
            "confusion_matrix": {"rows_true_columns_predicted": list(class_names),
                                 "matrix": metrics["confusion_matrix"]}}


def save_figures(y_true: np.ndarray, y_prob: np.ndarray, confusion: Sequence[Sequence[int]],
                 class_names: Sequence[str], out_dir: Path, split: str) -> dict[str, Path]:
    """Confusion matrix, ROC and PR curves (one-vs-rest for more than two classes) as PNGs."""
    title = split.replace("_", " ")
    return {
        "confusion_matrix": plot_confusion_matrix(confusion, class_names, out_dir / f"{split}_confusion_matrix.png",
                                                  title=f"{title}: confusion matrix"),
        "roc": plot_roc_curves(y_true, y_prob, class_names, out_dir / f"{split}_roc.png", title=f"{title}: ROC"),
        "pr": plot_pr_curves(y_true, y_prob, class_names, out_dir / f"{split}_pr.png", title=f"{title}: PR"),
    }


def add_figures_to_tensorboard(writer, prefix: str, figures: Mapping[str, Path], step: int) -> None:
    """Each PNG as a TensorBoard image ``<prefix>/<figure name>``."""
    for name, path in figures.items():
        with Image.open(path) as image:
            writer.add_image(f"{prefix}/{name}", np.asarray(image.convert("RGB")), step, dataformats="HWC")
