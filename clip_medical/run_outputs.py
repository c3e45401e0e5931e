"""The files a run leaves behind, in the guide's formats: history.json, training_history.png,
the best model's evaluation report and the cross-validation summary."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np

from shared import Callback, plot_confusion_matrix, plot_roc_curves, plot_training_curves
from clip_medical.json_files import write_json
from clip_medical.task import zero_shot_probabilities

CURVE_KEYS = ["train/loss", "val/loss", "train/acc", "val/acc"]  # the guide's two panels: loss, accuracy (%)
# Class names are often Chinese: use a CJK font when one is installed (DejaVu Sans has no CJK glyphs).
CJK_FONTS = ["Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei"]


@contextmanager
def cjk_plotting():
    """Prefer CJK-capable fonts; without one, CJK glyphs render as boxes (silently, not once per glyph)."""
    fonts = CJK_FONTS + list(matplotlib.rcParams["font.sans-serif"])
    with matplotlib.rc_context({"font.sans-serif": fonts}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def history_columns(history: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Engine history (one dict per epoch) -> one list per metric, named as in the guide
    (``train/loss`` -> ``train_loss``, ``val/acc`` -> ``val_acc``); per-class entries are left out."""
    keys = dict.fromkeys(k for epoch in history for k, v in epoch.items()
                         if _is_number(v) and (k == "epoch" or k.count("/") == 1))
    return {key.replace("/", "_"): [epoch.get(key) for epoch in history] for key in keys}


class GuideHistoryWriter(Callback):
    """After every epoch (so an interrupted run still has them): ``history.json`` in the guide's
    column format, replacing the engine's per-epoch list, and ``training_history.png``."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, engine, epoch: int, metrics: dict) -> None:
        if not engine.accelerator.is_main_process:
            return
        write_json(self.run_dir / "history.json", history_columns(engine.history))
        with cjk_plotting():
            plot_training_curves(engine.history, self.run_dir / "training_history.png", keys=CURVE_KEYS)


def write_evaluation_report(metrics: Mapping[str, Any], outputs: Mapping[str, np.ndarray], class_names: list[str],
                            run_dir: Path, title: str) -> None:
    """``best_model_metrics.json`` (per-class precision/recall/F1/AUC, confusion matrix) and its figures."""
    per_class = {name: {stat: metrics[f"{stat}/{name}"] for stat in ("precision", "recall", "f1", "auc", "specificity")}
                 for name in class_names}
    summary = {key: value for key, value in metrics.items() if _is_number(value) and "/" not in key}
    write_json(run_dir / "best_model_metrics.json",
               {"model": title, **summary, "per_class": per_class, "confusion_matrix": metrics["confusion_matrix"],
                "class_names": class_names})
    with cjk_plotting():
        plot_confusion_matrix(metrics["confusion_matrix"], class_names, run_dir / "confusion_matrix.png",
                              title=f"Confusion matrix ({title})")
        plot_roc_curves(outputs["labels"], zero_shot_probabilities(outputs["logits"]), class_names,
                        run_dir / "roc_curves.png", title=f"Zero-shot ROC ({title})")


def summarize_folds(fold_results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-fold results plus mean and standard deviation (numpy's ddof=0, as scikit-learn's
    ``cross_validate`` reports) of every numeric entry shared by all folds."""
    keys = [k for k in fold_results[0] if k != "fold" and all(_is_number(r.get(k)) for r in fold_results)]
    values = {k: np.array([r[k] for r in fold_results], dtype=np.float64) for k in keys}
    mean = {k: float(v.mean()) for k, v in values.items()}
    std = {k: float(v.std()) for k, v in values.items()}
    return {"n_splits": len(fold_results), "folds": list(fold_results), "mean": mean, "std": std,
            "mean_std": {k: f"{mean[k]:.4f} ± {std[k]:.4f}" for k in keys}}
