"""The figures and the self-contained ``report.html`` of an external validation (:mod:`shared.evaluate`).

The page embeds every figure as a base64 PNG and uses no script, font or style sheet from elsewhere, so it
opens offline and can be attached to a paper's supplement as one file.
"""
from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .io import atomic_write
from .plots import _save, plot_confusion_matrix, plot_multilabel_confusion, plt
from .stats import calibration

FIGURES = (("roc.png", "ROC curves"), ("pr.png", "Precision-recall curves"),
           ("roc_bands.png", "ROC with 95 % bootstrap bands"), ("pr_bands.png", "Precision-recall with 95 % bootstrap bands"),
           ("reliability.png", "Reliability diagram"), ("confusion.png", "Confusion at the exported thresholds"),
           ("confusion_youden.png", "Confusion at the Youden thresholds"))


def plot_bands(intervals: Mapping[str, Mapping[str, Any]], path: Path, kind: str) -> Path | None:
    """ROC (``kind="roc"``) or PR curves with their bootstrap bands, one line per class in ``intervals``."""
    if not intervals:
        return None
    x_key, y_key = ("fpr", "tpr") if kind == "roc" else ("recall", "precision")
    fig, ax = plt.subplots(figsize=(6, 6))
    for name, row in intervals.items():
        band = row[f"{kind}_band"]
        line, = ax.plot(band[x_key], band[y_key], lw=1.2, label=name)
        ax.fill_between(band[x_key], band[f"{y_key}_low"], band[f"{y_key}_high"], color=line.get_color(), alpha=0.2)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel=x_key.replace("fpr", "false positive rate"), ylabel=y_key.replace("tpr", "true positive rate"),
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
    return _save(fig, path)


def plot_reliability(curves: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Observed frequency against mean predicted probability per bin, ECE and Brier score in the legend."""
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    for name, cal in curves.items():
        ax.plot(cal["bin_confidence"], cal["bin_accuracy"], "o-", ms=3, lw=1,
                label=f"{name}: ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f}")
    ax.set(xlabel="mean predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def calibration_curves(task: str, class_names: Sequence[str], targets: np.ndarray, probs: np.ndarray,
                       intervals: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Per class for multi-label and binary models; the top-label curve (confidence of the predicted class
    against being right) for more than two classes."""
    if task == "multi-label" or len(class_names) == 2:
        return {name: row["calibration"] for name, row in intervals.items()}
    predicted = probs.argmax(1)
    return {"top label": calibration((predicted == targets).astype(int), probs.max(1))}


def youden_confusion(task: str, class_names: Sequence[str], targets: np.ndarray, probs: np.ndarray,
                     intervals: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    if task == "multi-label":
        cut = np.array([intervals[name]["youden_threshold"] for name in class_names])
        return plot_multilabel_confusion(targets, probs >= cut, class_names, path, title="Confusion per class "
                                         "at the Youden thresholds")
    if len(intervals) != 1:
        return None
    (name, row), = intervals.items()
    positive = list(class_names).index(name)
    predicted = np.where(probs[:, positive] >= row["youden_threshold"], positive, 1 - positive)
    matrix = [[int(np.sum((targets == t) & (predicted == p))) for p in range(2)] for t in range(2)]
    return plot_confusion_matrix(matrix, class_names, path, title=f"Confusion at the Youden threshold "
                                                                  f"({row['youden_threshold']:.3f})")


def _interval(value) -> str:
    point, low, high = value
    return "n/a" if not np.isfinite(point) else f"{point:.3f} ({low:.3f}-{high:.3f})"


def interval_rows(intervals: Mapping[str, Mapping[str, Any]]) -> str:
    head = ("class", "AUROC (DeLong 95 % CI)", "AUROC (bootstrap 95 % CI)", "threshold", "sensitivity",
            "specificity", "accuracy", "F1", "Youden threshold", "ECE", "Brier")
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for name, row in intervals.items():
        at = row["at_threshold"]
        cells = [html.escape(name), _interval(row["auroc_delong"]), _interval(row["auroc_bootstrap"]),
                 "argmax" if row["threshold"] is None else f"{row['threshold']:.3f}", *(_interval(at[k]) for k in ("sensitivity", "specificity", "accuracy", "f1")),
                 f"{row['youden_threshold']:.3f}", f"{row['calibration']['ece']:.3f}", f"{row['calibration']['brier']:.3f}"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def write_report(out: Path, *, info: Mapping[str, Any], cfg: Any, metrics: Mapping[str, Any],
                 intervals: Mapping[str, Mapping[str, Any]], targets: np.ndarray, probs: np.ndarray,
                 cases: Sequence[Path] = ()) -> Path:
    """The figures beyond those of :func:`shared.evaluation.write_split_results`, and ``report.html``."""
    task, class_names = info["task"], list(info["class_names"])
    plot_bands(intervals, out / "roc_bands.png", "roc")
    plot_bands(intervals, out / "pr_bands.png", "pr")
    plot_reliability(calibration_curves(task, class_names, targets, probs, intervals), out / "reliability.png")
    youden_confusion(task, class_names, targets, probs, intervals, out / "confusion_youden.png")
    headline = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "/" not in k}
    summary = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" if isinstance(v, float) else
                      f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in headline.items())
    figures = "".join(
        f"<figure><img alt='{title}' src='data:image/png;base64,"
        f"{base64.b64encode((out / name).read_bytes()).decode()}'><figcaption>{title}</figcaption></figure>"
        for name, title in FIGURES if (out / name).is_file())
    heatmaps = "".join(f"<figure><img alt='{html.escape(p.stem)}' src='data:image/png;base64,"
                       f"{base64.b64encode(Path(p).read_bytes()).decode()}'><figcaption>{html.escape(p.stem)}"
                       f"</figcaption></figure>" for p in cases)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>External validation: {html.escape(info['project'])} model</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:3px 8px;font-size:13px}}figure{{display:inline-block;margin:6px}}
img{{width:420px}}</style></head><body>
<h1>External validation: {html.escape(info['project'])} model</h1>
<p>Model <code>{html.escape(str(cfg.model))}</code> ({html.escape(task)}, classes {html.escape(', '.join(class_names))});
data <code>{html.escape(str(cfg.data))}</code>: {len(probs)} samples. Intervals: 95 %, DeLong and a stratified
bootstrap of {cfg.bootstrap} resamples (seed {cfg.seed}); thresholds: the exported ones
{'' if info.get('thresholds') else '(this export has none: 0.5) '}and Youden's{'; one class against the rest' if task != 'multi-label' and len(class_names) > 2 else ''}. Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.</p>
<h2>Summary</h2><table>{summary}</table>
<h2>Per class, with 95 % confidence intervals</h2>{interval_rows(intervals)}
<h2>Figures</h2>{figures}
{'<h2>Heatmaps: the most confident correct and wrong cases</h2>' + heatmaps if heatmaps else ''}
</body></html>
"""
    return atomic_write(out / "report.html", lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
