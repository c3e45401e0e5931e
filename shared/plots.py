"""PNG figures for run folders: training curves, ROC and PR curves, confusion matrix."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training_curves(history: Sequence[Mapping[str, float]], path: str | Path,
                         keys: Sequence[str] | None = None) -> Path:
    """One panel per metric family (loss, lr, monitored metrics) against the epoch."""
    if keys is None:
        candidates = [k for k in history[0] if k != "epoch" and isinstance(history[0][k], (int, float))]
        keys = [k for k in candidates if "/" in k and k.count("/") == 1]
    families: dict[str, list[str]] = {}
    for key in keys:
        families.setdefault(key.split("/", 1)[1], []).append(key)
    cols = min(3, len(families)) or 1
    rows = max(1, -(-len(families) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, (family, members) in zip(axes.flat, families.items()):
        for key in members:
            ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", ms=3, label=key)
        ax.set_title(family)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        if family == "lr":
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(families):]:
        ax.axis("off")
    return _save(fig, path)


def _one_vs_rest(y_true: np.ndarray, num_classes: int) -> np.ndarray:
    y_true = np.asarray(y_true)
    return np.eye(num_classes, dtype=int)[y_true] if y_true.ndim == 1 else y_true


def plot_roc_curves(y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str], path: str | Path,
                    title: str = "ROC") -> Path:
    """ROC per class; ``y_true`` is [N, C] multi-label or [N] class indices (one-vs-rest)."""
    onehot = _one_vs_rest(y_true, len(class_names))
    fig, ax = plt.subplots(figsize=(6, 6))
    for c, name in enumerate(class_names):
        if len(np.unique(onehot[:, c])) < 2:
            continue
        fpr, tpr, _ = roc_curve(onehot[:, c], y_prob[:, c])
        ax.plot(fpr, tpr, lw=1, label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_pr_curves(y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str], path: str | Path,
                   title: str = "Precision-recall") -> Path:
    onehot = _one_vs_rest(y_true, len(class_names))
    fig, ax = plt.subplots(figsize=(6, 6))
    for c, name in enumerate(class_names):
        if onehot[:, c].sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(onehot[:, c], y_prob[:, c])
        ax.plot(recall, precision, lw=1, label=name)
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """Rows are the true class, columns the predicted class."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 3, 1.2 * len(class_names) + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    return _save(fig, path)


def plot_multilabel_confusion(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], path: str | Path,
                              title: str = "Confusion per class") -> Path:
    """One 2x2 matrix (rows true 0/1, columns predicted 0/1) per class of a multi-label problem."""
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    cols = min(5, len(class_names))
    rows = -(-len(class_names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    for c, (ax, name) in enumerate(zip(axes.flat, class_names)):
        matrix = np.array([[np.sum((y_true[:, c] == t) & (y_pred[:, c] == p)) for p in (0, 1)] for t in (0, 1)])
        ax.imshow(matrix, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
        ax.set_xticks([0, 1], ["0", "1"])
        ax.set_yticks([0, 1], ["0", "1"])
        ax.set_title(name, fontsize=8)
    for ax in list(axes.flat)[len(class_names):]:
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)
