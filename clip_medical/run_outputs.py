"""The guide's own summary files, built from the numbers the shared engine and ``shared.evaluate_best``
already produced (history and ``results/val_metrics.json``): ``best_model_metrics.json``, the per-fold
rows of ``cv_summary.json`` and their mean and standard deviation."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np

# Class names are often Chinese: use a CJK font when one is installed (DejaVu Sans has no CJK glyphs).
CJK_FONTS = ["Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei"]
PER_CLASS_STATS = ("precision", "recall", "f1", "auc", "specificity")


@contextmanager
def cjk_plotting():
    """Prefer CJK-capable fonts; without one, CJK glyphs render as boxes (silently, not once per glyph)."""
    fonts = CJK_FONTS + list(matplotlib.rcParams["font.sans-serif"])
    with matplotlib.rc_context({"font.sans-serif": fonts}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def best_epoch(history: Sequence[Mapping[str, Any]], monitor: str, mode: str) -> int:
    """The best epoch by ``monitor`` (first occurrence, as the engine keeps its best checkpoint)."""
    values = np.array([epoch[monitor] for epoch in history], dtype=np.float64)
    return int(np.nanargmax(values) if mode == "max" else np.nanargmin(values)) + 1


def best_model_report(val: Mapping[str, Any], epoch_metrics: Mapping[str, Any], class_names: list[str],
                      title: str) -> dict[str, Any]:
    """``best_model_metrics.json``: the evaluated model's validation metrics (accuracy also in percent, as
    the guide), its validation loss from the history, per-class statistics and the confusion matrix."""
    summary = {key: value for key, value in val.items() if _is_number(value) and "/" not in key}
    per_class = {name: {stat: val[f"{stat}/{name}"] for stat in PER_CLASS_STATS} for name in class_names}
    return {"model": title, **summary, "acc": 100.0 * val["accuracy"], "loss": epoch_metrics["val/loss"],
            "per_class": per_class, "confusion_matrix": val["confusion_matrix"], "class_names": class_names}


def split_summary(history: Sequence[Mapping[str, Any]], report: Mapping[str, Any], best_epoch: int) -> dict[str, Any]:
    """One run's row of ``cv_summary.json``: last-epoch train/val numbers, the best epoch, the best model's."""
    last = history[-1]
    return {
        "epochs_trained": len(history),
        "train_loss": last["train/loss"], "train_acc": last["train/acc"],
        "val_loss": last["val/loss"], "val_acc": last["val/acc"],
        "best_val_acc": max(epoch["val/acc"] for epoch in history), "best_epoch": best_epoch,
        "best_model_val_acc": report["acc"], "best_model_val_auc": report["auc"],
        "best_model_val_loss": report["loss"], "temperature": last["train/temperature"],
    }


def summarize_folds(fold_results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-fold results plus mean and standard deviation (numpy's ddof=0, as scikit-learn's
    ``cross_validate`` reports) of every numeric entry shared by all folds."""
    keys = [k for k in fold_results[0] if k != "fold" and all(_is_number(r.get(k)) for r in fold_results)]
    values = {k: np.array([r[k] for r in fold_results], dtype=np.float64) for k in keys}
    mean = {k: float(v.mean()) for k, v in values.items()}
    std = {k: float(v.std()) for k, v in values.items()}
    return {"n_splits": len(fold_results), "folds": list(fold_results), "mean": mean, "std": std,
            "mean_std": {k: f"{mean[k]:.4f} ± {std[k]:.4f}" for k in keys}}
