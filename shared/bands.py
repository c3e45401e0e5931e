"""ROC and precision-recall curves with percentile bootstrap bands, vectorised over all resamples (the curve
part of :mod:`shared.stats`, which re-exports :func:`roc_band` and :func:`pr_band`)."""
from __future__ import annotations

import numpy as np

from .stats import _binary, _chunks, _nan_percentile_ci, _one_valued, _percentiles, _safe_div, bootstrap_indices

def _curve_vertices(yb: np.ndarray, sb: np.ndarray):
    """Cumulative (tp, fp) counts of each row at its distinct thresholds, highest score first.

    Shapes (rows, n): the entries inside a tie group are replaced by the group's end point, so every column
    is a vertex of the (tied-segments-are-straight) curve, possibly repeated.
    """
    order = np.argsort(-sb, axis=1, kind="stable")
    ys = np.take_along_axis(yb, order, axis=1)
    ss = np.take_along_axis(sb, order, axis=1)
    tp = np.cumsum(ys, axis=1, dtype=np.float64)
    fp = np.cumsum(~ys, axis=1, dtype=np.float64)
    last = np.ones_like(ys)
    last[:, :-1] = ss[:, :-1] != ss[:, 1:]
    # counts are nondecreasing: the next vertex's count is the reversed running minimum over vertices
    tp = np.minimum.accumulate(np.where(last, tp, np.inf)[:, ::-1], axis=1)[:, ::-1]
    fp = np.minimum.accumulate(np.where(last, fp, np.inf)[:, ::-1], axis=1)[:, ::-1]
    return tp, fp


def _row_searchsorted(values: np.ndarray, queries: np.ndarray, side: str) -> np.ndarray:
    """Row-wise searchsorted of nondecreasing rows ``values`` (rows, k) for ``queries`` (rows, g).

    One flat search: each row is shifted by row * span so rows do not overlap (values are integer counts,
    exact in float64, and the caller offsets queries by a tolerance far below 1).
    """
    rows, k = values.shape
    span = max(float(np.max(values, initial=0.0)), float(np.max(queries, initial=0.0))) + 2.0
    shift = np.arange(rows, dtype=np.float64)[:, None] * span
    flat = np.searchsorted((values + shift).ravel(), (queries + shift).ravel(), side=side)
    return flat.reshape(queries.shape) - np.arange(rows)[:, None] * k


def _roc_rows(yb: np.ndarray, sb: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """TPR of each row's empirical ROC (straight segments between distinct thresholds) at FPR = grid.

    Right-continuous: on a vertical segment the upper TPR is taken. Rows without both classes give NaN.
    """
    tp, fp = _curve_vertices(yb, sb)
    rows = tp.shape[0]
    tp = np.concatenate([np.zeros((rows, 1)), tp], axis=1)
    fp = np.concatenate([np.zeros((rows, 1)), fp], axis=1)
    n_pos, n_neg = tp[:, -1:], fp[:, -1:]
    target = grid[None, :] * n_neg                              # FPR -> false-positive count
    k = _row_searchsorted(fp, target + 1e-6, side="right")      # first vertex with fp > target
    k = np.clip(k, 1, fp.shape[1] - 1)
    fp0, fp1 = np.take_along_axis(fp, k - 1, 1), np.take_along_axis(fp, k, 1)
    tp0, tp1 = np.take_along_axis(tp, k - 1, 1), np.take_along_axis(tp, k, 1)
    frac = np.clip(_safe_div(target - fp0, fp1 - fp0), 0.0, 1.0)
    frac = np.where(fp1 > fp0, frac, 0.0)
    tpr = _safe_div(tp0 + frac * (tp1 - tp0), np.broadcast_to(n_pos, tp0.shape))
    tpr = np.where(target >= n_neg - 1e-6, 1.0, tpr)           # at FPR = 1 the curve has reached (1, 1)
    ok = (n_pos[:, 0] > 0) & (n_neg[:, 0] > 0)
    tpr[~ok] = np.nan
    return np.clip(tpr, 0.0, 1.0)


def _pr_rows(yb: np.ndarray, sb: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Interpolated precision of each row at recall = grid: max precision over thresholds with recall >= r."""
    tp, fp = _curve_vertices(yb, sb)
    n_pos = tp[:, -1:]
    precision = tp / (tp + fp)                                  # every vertex has tp + fp >= 1
    best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    target = grid[None, :] * n_pos                              # recall -> true-positive count
    k = _row_searchsorted(tp, target - 1e-6, side="left")       # first vertex with tp >= target
    k = np.clip(k, 0, tp.shape[1] - 1)
    out = np.take_along_axis(best_after, k, 1)
    out[n_pos[:, 0] <= 0] = np.nan
    return out


def _band(curve_fn, y_true, y_score, n_resamples, seed, level, grid, what):
    y, s = _binary(y_true, y_score)
    _percentiles(level)
    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")
    axis = np.linspace(0.0, 1.0, grid)
    if _one_valued(y, what):
        nan = np.full(grid, np.nan)
        return axis, nan, nan, nan
    point = curve_fn(y[None], s[None], axis)[0]
    idx = bootstrap_indices(y, n_resamples, seed, stratified=True)
    curves = np.concatenate([curve_fn(y[idx[c]], s[idx[c]], axis) for c in _chunks(*idx.shape)])
    low, high = _nan_percentile_ci(curves, level)
    return axis, point, low, high


def roc_band(y_true, y_score, n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
             grid: int = 101) -> dict:
    """ROC curve on an FPR grid with a pointwise percentile band over stratified bootstrap resamples.

    Returns lists ``fpr`` (``grid`` points in [0, 1]), ``tpr`` (the full-set empirical ROC, linear between
    distinct thresholds, upper value on vertical steps), ``tpr_low`` and ``tpr_high``. NaN (with a warning)
    for one-valued labels.
    """
    fpr, tpr, low, high = _band(_roc_rows, y_true, y_score, n_resamples, seed, level, grid, "roc_band")
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "tpr_low": low.tolist(), "tpr_high": high.tolist()}


def pr_band(y_true, y_score, n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
            grid: int = 101) -> dict:
    """Precision-recall curve on a recall grid with a pointwise percentile band (stratified bootstrap).

    Precision at recall r is the interpolated precision max{precision(t) : recall(t) >= r} (linear
    interpolation is not valid in PR space). Returns lists ``recall``, ``precision``, ``precision_low``,
    ``precision_high``; NaN (with a warning) for one-valued labels.
    """
    rec, prec, low, high = _band(_pr_rows, y_true, y_score, n_resamples, seed, level, grid, "pr_band")
    return {"recall": rec.tolist(), "precision": prec.tolist(), "precision_low": low.tolist(),
            "precision_high": high.tolist()}
