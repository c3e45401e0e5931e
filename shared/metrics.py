"""Classification metrics on top of scikit-learn.

Every function takes numpy arrays of labels and probabilities for the whole evaluation set and returns
a flat ``{name: float}`` dict that can go straight to a logger. A class whose labels hold a single
value has no ROC curve: its AUROC/AP is NaN with a warning (as MONAI does), never an exception.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Samples per class: a bincount of class indices, or the positives per column of a 0/1 matrix."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels.sum(axis=0).astype(np.int64)
    return np.bincount(labels.astype(np.int64), minlength=num_classes)


def _safe_score(score_fn, y_true: np.ndarray, y_score: np.ndarray, what: str) -> float:
    if len(np.unique(y_true)) < 2:
        warnings.warn(f"{what}: labels hold a single value, metric is undefined (NaN)", RuntimeWarning,
                      stacklevel=3)
        return float("nan")
    return float(score_fn(y_true, y_score))


def _nanmean(values: Sequence[float]) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _specificity(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    negatives = y_true == 0
    return float((y_pred[negatives] == 0).mean()) if negatives.any() else float("nan")


def tune_thresholds(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """Per-class threshold maximising F1 on (validation) data; 0.5 for a class without positives."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    thresholds = np.full(y_true.shape[1], 0.5)
    for c in range(y_true.shape[1]):
        if y_true[:, c].sum() == 0:
            continue
        precision, recall, cut = precision_recall_curve(y_true[:, c], y_prob[:, c])
        f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
        thresholds[c] = float(cut[int(np.argmax(f1[:-1]))])
    return thresholds


def multilabel_metrics(y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str],
                       thresholds: np.ndarray | None = None) -> dict[str, float]:
    """AUROC, AP, F1, sensitivity and specificity per class plus macro/micro summaries.

    ``thresholds`` (e.g. from :func:`tune_thresholds` on validation) add ``*_tuned`` F1 figures;
    sensitivity and specificity use them when given, else 0.5.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_true.shape != y_prob.shape or y_true.ndim != 2 or y_true.shape[1] != len(class_names):
        raise ValueError(f"expected labels and probabilities of shape [N, {len(class_names)}], "
                         f"got {y_true.shape} and {y_prob.shape}")
    pred_05 = (y_prob >= 0.5).astype(np.int64)
    cut = np.full(len(class_names), 0.5) if thresholds is None else np.asarray(thresholds)
    pred_cut = (y_prob >= cut).astype(np.int64)
    out: dict[str, float] = {}
    aurocs, aps, f1s, f1s_tuned, sens, specs = [], [], [], [], [], []
    for c, name in enumerate(class_names):
        aurocs.append(_safe_score(roc_auc_score, y_true[:, c], y_prob[:, c], f"AUROC of {name}"))
        aps.append(_safe_score(average_precision_score, y_true[:, c], y_prob[:, c], f"AP of {name}"))
        f1s.append(float(f1_score(y_true[:, c], pred_05[:, c], zero_division=0)))
        f1s_tuned.append(float(f1_score(y_true[:, c], pred_cut[:, c], zero_division=0)))
        positives = y_true[:, c] == 1
        sens.append(float(pred_cut[positives, c].mean()) if positives.any() else float("nan"))
        specs.append(_specificity(y_true[:, c], pred_cut[:, c]))
        out[f"auroc/{name}"], out[f"ap/{name}"], out[f"f1/{name}"] = aurocs[-1], aps[-1], f1s[-1]
        out[f"sensitivity/{name}"], out[f"specificity/{name}"] = sens[-1], specs[-1]
    out["macro_auroc"] = _nanmean(aurocs)
    out["micro_auroc"] = _safe_score(roc_auc_score, y_true.ravel(), y_prob.ravel(), "micro AUROC")
    out["macro_ap"] = _nanmean(aps)
    out["micro_ap"] = _safe_score(average_precision_score, y_true.ravel(), y_prob.ravel(), "micro AP")
    out["macro_f1"] = float(np.mean(f1s))
    out["micro_f1"] = float(f1_score(y_true.ravel(), pred_05.ravel(), zero_division=0))
    out["macro_sensitivity"] = _nanmean(sens)
    out["macro_specificity"] = _nanmean(specs)
    if thresholds is not None:
        out["macro_f1_tuned"] = float(np.mean(f1s_tuned))
        out["micro_f1_tuned"] = float(f1_score(y_true.ravel(), pred_cut.ravel(), zero_division=0))
    return out


def multiclass_metrics(y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str],
                       positive_class: int | None = None) -> dict:
    """Accuracy, balanced accuracy, precision/recall/F1 (macro, weighted, per class), specificity,
    AUC (binary: of ``positive_class``, default the last class; else one-vs-rest macro) and the
    confusion matrix (rows = true class, columns = predicted, in ``class_names`` order)."""
    y_true = np.asarray(y_true).astype(np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    num_classes = len(class_names)
    if y_prob.ndim != 2 or y_prob.shape != (len(y_true), num_classes):
        raise ValueError(f"expected probabilities of shape [{len(y_true)}, {num_classes}], got {y_prob.shape}")
    labels = list(range(num_classes))
    y_pred = y_prob.argmax(1)
    out: dict = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(np.unique(y_true)) > 1
        else float("nan"),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                     zero_division=0)
        out[f"precision_{average}"], out[f"recall_{average}"], out[f"f1_{average}"] = float(p), float(r), float(f)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    specs, aucs = [], []
    for c, name in enumerate(class_names):
        is_c = (y_true == c).astype(np.int64)
        specs.append(_specificity(is_c, (y_pred == c).astype(np.int64)))
        aucs.append(_safe_score(roc_auc_score, is_c, y_prob[:, c], f"one-vs-rest AUC of {name}"))
        out[f"precision/{name}"], out[f"recall/{name}"], out[f"f1/{name}"] = float(p[c]), float(r[c]), float(f[c])
        out[f"specificity/{name}"], out[f"auc/{name}"] = specs[-1], aucs[-1]
    out["specificity_macro"] = _nanmean(specs)
    if num_classes == 2:
        pos = 1 if positive_class is None else positive_class
        out["auc"] = aucs[pos]
        out["sensitivity"], out["recall"] = float(r[pos]), float(r[pos])
        out["specificity"], out["precision"], out["f1"] = specs[pos], float(p[pos]), float(f[pos])
    else:
        out["auc"] = _nanmean(aucs)
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out
