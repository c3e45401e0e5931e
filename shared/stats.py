"""Statistics of an external-validation report: confidence intervals, operating points, calibration, bands.

Binary inputs throughout: ``y_true`` in {0, 1} and ``y_score`` / ``y_prob`` a score or probability of the
positive class. Everything random takes a ``seed`` and is deterministic.

* ``delong_auroc`` / ``delong_ci``: AUROC and its DeLong et al. (1988) variance, computed with the fast
  midrank algorithm of Sun & Xu (2014); normal CI clipped to [0, 1].
* ``bootstrap_indices``: (n_resamples, n) resample indices, stratified by class by default (each resample
  keeps the class counts: column j always draws from the class of sample j, so ``y[idx[b]] == y``).
* ``bootstrap_auroc_ci``, ``bootstrap_threshold_cis``, ``roc_band``, ``pr_band`` (in :mod:`shared.bands`):
  percentile bootstrap,
  vectorised over all resamples at once (one ``rankdata``/``argsort`` over a (resamples, n) matrix, in chunks
  that bound memory) instead of a Python loop of scikit-learn calls.
* ``threshold_metrics`` / ``youden_threshold`` / ``calibration``.

Labels that hold a single value have no ROC curve: such metrics are NaN with a ``RuntimeWarning`` (as MONAI
does), never an exception.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_curve

__all__ = [
    "delong_auroc", "delong_ci", "bootstrap_indices", "bootstrap_auroc_ci", "threshold_metrics",
    "bootstrap_threshold_cis", "youden_threshold", "calibration", "roc_band", "pr_band",
]

THRESHOLD_METRICS = ("sensitivity", "specificity", "accuracy", "f1", "ppv", "npv")
_CHUNK_ELEMENTS = 4_000_000  # resample rows are processed in chunks of about this many entries
_NAN = float("nan")


# ----------------------------------------------------------------------------------------------- helpers
def _binary(y_true, y_score=None, what: str = "y_score"):
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold binary labels in {0, 1}")
    y = y.astype(bool)
    if y_score is None:
        return y
    s = np.asarray(y_score, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"{what} shape {s.shape} does not match y_true shape {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{what} holds non-finite values")
    return y, s


def _one_valued(y: np.ndarray, what: str) -> bool:
    """True (with a warning) when binary labels hold a single value."""
    if y.all() or not y.any():
        warnings.warn(f"{what}: labels hold a single value, metric is undefined (NaN)", RuntimeWarning,
                      stacklevel=3)
        return True
    return False


def _percentiles(level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return 100.0 * (1.0 - level) / 2.0, 100.0 * (1.0 + level) / 2.0


def _nan_percentile_ci(samples: np.ndarray, level: float) -> np.ndarray:
    """Percentile interval along axis 0, ignoring NaN resamples; NaN where every resample is NaN."""
    lo, hi = _percentiles(level)
    samples = np.asarray(samples, dtype=np.float64)
    finite = np.isfinite(samples).any(axis=0)
    out = np.full((2,) + samples.shape[1:], np.nan)
    if finite.any():
        out[:, finite] = np.nanpercentile(samples[:, finite], [lo, hi], axis=0)
    return out


def _chunks(n_rows: int, n_cols: int):
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _safe_div(num, den) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


# ------------------------------------------------------------------------------------------------ DeLong
def delong_auroc(y_true, y_score) -> tuple[float, float]:
    """(AUROC, variance) by DeLong et al. (1988), with the midrank algorithm of Sun & Xu (2014).

    With m positives X and n negatives Y, the structural components are V10_i = mean_j psi(X_i, Y_j) and
    V01_j = mean_i psi(X_i, Y_j) (psi = 1 if X > Y, 0.5 if tied, else 0); var = S10/m + S01/n with S10, S01
    their sample variances (ddof=1). Via midranks: V10_i = (Tz_i - Tx_i)/n, V01_j = 1 - (Tz_j - Ty_j)/m.
    One-valued labels: (NaN, NaN) with a warning; a class with a single sample gives a NaN variance.
    """
    y, s = _binary(y_true, y_score)
    if _one_valued(y, "delong_auroc"):
        return _NAN, _NAN
    x, yneg = s[y], s[~y]
    m, n = x.size, yneg.size
    tz = rankdata(np.concatenate([x, yneg]))  # midranks in the pooled sample
    tx, ty = rankdata(x), rankdata(yneg)       # midranks within each class
    auc = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    if m < 2 or n < 2:
        warnings.warn("delong_auroc: a class has a single sample, the variance is undefined (NaN)",
                      RuntimeWarning, stacklevel=2)
        return float(auc), _NAN
    var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    return float(auc), float(var)


def delong_ci(y_true, y_score, level: float = 0.95) -> tuple[float, float, float]:
    """(auc, low, high): normal-approximation CI auc +- z * sqrt(DeLong variance), clipped to [0, 1]."""
    _percentiles(level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        auc, var = delong_auroc(y_true, y_score)
    if not np.isfinite(auc) or not np.isfinite(var):
        warnings.warn("delong_ci: labels hold a single value (or a class has one sample), CI is undefined (NaN)",
                      RuntimeWarning, stacklevel=2)
        return auc, _NAN, _NAN
    half = norm.ppf(0.5 + level / 2.0) * np.sqrt(var)
    return auc, float(max(0.0, auc - half)), float(min(1.0, auc + half))


# --------------------------------------------------------------------------------------------- bootstrap
def bootstrap_indices(y_true, n_resamples: int = 1000, seed: int = 0, stratified: bool = True) -> np.ndarray:
    """(n_resamples, n) int64 resample indices into ``y_true``.

    ``stratified``: every class (each value of a binary or class-index vector) is resampled with replacement
    within itself, and column j of every row draws from the class of sample j, so ``y_true[idx[b]] == y_true``
    for every resample b (class counts are kept). Otherwise plain resampling of all n samples.
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y.shape}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    n = y.size
    if not stratified:
        return rng.integers(0, n, size=(n_resamples, n), dtype=np.int64)
    idx = np.empty((n_resamples, n), dtype=np.int64)
    for value in np.unique(y):  # sorted, so the draw order is deterministic
        members = np.flatnonzero(y == value)
        idx[:, members] = members[rng.integers(0, members.size, size=(n_resamples, members.size))]
    return idx


def _auroc_rows(yb: np.ndarray, sb: np.ndarray) -> np.ndarray:
    """AUROC of each row of (labels, scores) matrices via midranks (Mann-Whitney); NaN for one-valued rows."""
    ranks = rankdata(sb, axis=1)
    m = yb.sum(axis=1).astype(np.float64)
    n = yb.shape[1] - m
    rank_sum = np.where(yb, ranks, 0.0).sum(axis=1)
    return _safe_div(rank_sum - m * (m + 1) / 2.0, m * n)


def bootstrap_auroc_ci(y_true, y_score, n_resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float, float]:
    """(auc, low, high): AUROC of the full set and the percentile CI over stratified bootstrap resamples.

    All resamples are ranked at once (``rankdata(axis=1)`` on a (n_resamples, n) matrix, in memory-bounded
    chunks). One-valued labels: NaN triple with a warning.
    """
    y, s = _binary(y_true, y_score)
    _percentiles(level)
    if _one_valued(y, "bootstrap_auroc_ci"):
        return _NAN, _NAN, _NAN
    auc = float(_auroc_rows(y[None], s[None])[0])
    idx = bootstrap_indices(y, n_resamples, seed, stratified=True)
    aucs = np.concatenate([_auroc_rows(y[idx[c]], s[idx[c]]) for c in _chunks(*idx.shape)])
    low, high = _nan_percentile_ci(aucs, level)
    return auc, float(low), float(high)


# ------------------------------------------------------------------------------------- operating points
def _threshold_rows(yb: np.ndarray, pb: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of each row from (labels, predictions) boolean matrices; NaN where a denominator is 0."""
    tp = (yb & pb).sum(axis=-1)
    fp = (~yb & pb).sum(axis=-1)
    fn = (yb & ~pb).sum(axis=-1)
    tn = (~yb & ~pb).sum(axis=-1)
    return {
        "sensitivity": _safe_div(tp, tp + fn),
        "specificity": _safe_div(tn, tn + fp),
        "accuracy": _safe_div(tp + tn, tp + tn + fp + fn),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "ppv": _safe_div(tp, tp + fp),
        "npv": _safe_div(tn, tn + fn),
    }


def threshold_metrics(y_true, y_prob, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, accuracy, F1, PPV, NPV of the prediction ``y_prob >= threshold``.

    A metric whose denominator is zero (e.g. sensitivity without positives, PPV without predicted positives)
    is NaN with a warning.
    """
    y, p = _binary(y_true, y_prob, "y_prob")
    out = {k: float(v) for k, v in _threshold_rows(y, p >= threshold).items()}
    undefined = [k for k, v in out.items() if np.isnan(v)]
    if undefined:
        warnings.warn(f"threshold_metrics: {', '.join(undefined)} undefined (zero denominator; labels may hold "
                      "a single value), NaN", RuntimeWarning, stacklevel=2)
    return out


def bootstrap_threshold_cis(y_true, y_prob, threshold: float, n_resamples: int = 1000, seed: int = 0,
                            level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """{metric: (point, low, high)} for every key of ``threshold_metrics``: stratified percentile bootstrap.

    Confusion counts of all resamples come from one boolean (n_resamples, n) matrix. Resamples where a metric
    is undefined (e.g. PPV with no predicted positive) are left out of its percentiles.
    """
    y, p = _binary(y_true, y_prob, "y_prob")
    _percentiles(level)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        point = threshold_metrics(y, p, threshold)
    for w in caught:
        warnings.warn(str(w.message).replace("threshold_metrics", "bootstrap_threshold_cis"), w.category,
                      stacklevel=2)
    pred = p >= threshold
    idx = bootstrap_indices(y, n_resamples, seed, stratified=True)
    parts = [_threshold_rows(y[idx[c]], pred[idx[c]]) for c in _chunks(*idx.shape)]
    out = {}
    for k in THRESHOLD_METRICS:
        low, high = _nan_percentile_ci(np.concatenate([part[k] for part in parts]), level)
        out[k] = (point[k], float(low), float(high))
    return out


def youden_threshold(y_true, y_prob) -> float:
    """The ROC threshold that maximises Youden's J = sensitivity + specificity - 1 (prediction ``>= t``).

    Over scikit-learn's ``roc_curve`` thresholds except its leading ``inf``; ties go to the highest
    threshold. One-valued labels: NaN with a warning.
    """
    y, p = _binary(y_true, y_prob, "y_prob")
    if _one_valued(y, "youden_threshold"):
        return _NAN
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    j = (tpr - fpr)[1:]
    return float(thresholds[1:][int(np.argmax(j))])


# ------------------------------------------------------------------------------------------ calibration
def calibration(y_true, y_prob, bins: int = 10) -> dict:
    """Reliability diagram and scores on ``bins`` equal-width bins of [0, 1].

    Bin i holds edges[i] <= p < edges[i+1] (the last bin includes 1). Returns lists ``bin_edges`` (bins+1),
    ``bin_confidence`` (mean probability), ``bin_accuracy`` (fraction of positives) and ``bin_count``; NaN for
    empty bins. ``ece`` = sum over bins of count/n * |accuracy - confidence|; ``brier`` = mean (p - y)^2.
    Both are defined for one-valued labels too (no warning).
    """
    y, p = _binary(y_true, y_prob, "y_prob")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("y_prob must lie in [0, 1]")
    edges = np.arange(bins + 1) / bins  # i / bins exactly rounded, so a probability such as 0.3 sits on its edge
    which = np.searchsorted(edges[1:-1], p, side="right")
    count = np.bincount(which, minlength=bins)
    conf = _safe_div(np.bincount(which, weights=p, minlength=bins), count)
    acc = _safe_div(np.bincount(which, weights=y.astype(np.float64), minlength=bins), count)
    n = max(p.size, 1)
    filled = count > 0
    ece = float(np.sum(count[filled] / n * np.abs(acc[filled] - conf[filled]))) if p.size else _NAN
    brier = float(np.mean((p - y) ** 2)) if p.size else _NAN
    return {"ece": ece, "brier": brier, "bin_edges": edges.tolist(), "bin_confidence": conf.tolist(),
            "bin_accuracy": acc.tolist(), "bin_count": count.astype(int).tolist()}


from .bands import pr_band, roc_band  # noqa: E402  (last: the bands build on the helpers above)
