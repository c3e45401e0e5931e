"""shared.stats: DeLong against sklearn and the definition, bootstrap coverage, operating points, calibration."""
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import brier_score_loss, precision_recall_curve, roc_auc_score, roc_curve

from shared.stats import (
    bootstrap_auroc_ci,
    bootstrap_indices,
    bootstrap_threshold_cis,
    calibration,
    delong_auroc,
    delong_ci,
    pr_band,
    roc_band,
    threshold_metrics,
    youden_threshold,
)


def _delong_bruteforce(y, s):
    """DeLong's variance straight from the definition: explicit double loop over positives x negatives."""
    x, z = s[y == 1], s[y == 0]
    m, n = len(x), len(z)
    psi = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            psi[i, j] = 1.0 if x[i] > z[j] else (0.5 if x[i] == z[j] else 0.0)
    auc = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    s10 = ((v10 - auc) ** 2).sum() / (m - 1)
    s01 = ((v01 - auc) ** 2).sum() / (n - 1)
    return auc, s10 / m + s01 / n


@pytest.mark.parametrize("seed,n,decimals", [(0, 80, 1), (1, 150, 0), (2, 40, 2), (3, 7, 1)])
def test_delong_equals_sklearn_and_definition_with_ties(seed, n, decimals):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    y[:2] = [0, 1]
    s = np.round(rng.normal(size=n) + y, decimals)  # rounding makes many ties, across and within classes
    s[1] = s[0]  # at least one positive-negative tie
    assert len(np.unique(s)) < n
    auc, var = delong_auroc(y, s)
    ref_auc, ref_var = _delong_bruteforce(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc == pytest.approx(ref_auc, abs=1e-12)
    assert var == pytest.approx(ref_var, abs=1e-12, rel=1e-12)
    a, lo, hi = delong_ci(y, s)
    half = norm.ppf(0.975) * np.sqrt(ref_var)
    assert a == auc and lo == pytest.approx(max(0, auc - half), abs=1e-12)
    assert hi == pytest.approx(min(1, auc + half), abs=1e-12)


def test_delong_hanley_mcneil_1982_rating_example():
    # Hanley & McNeil (1982), Radiology 143:29, Table 1: 109 CT images rated 1 (definitely normal) .. 5
    # (definitely abnormal); 51 abnormal, 58 normal. Published: A = 0.8932, SE = 0.0320 (Hanley-McNeil SE).
    abnormal, normal = [3, 2, 2, 11, 33], [33, 6, 6, 11, 2]
    ratings = np.arange(1, 6)
    y = np.r_[np.ones(51, int), np.zeros(58, int)]
    s = np.r_[np.repeat(ratings, abnormal), np.repeat(ratings, normal)].astype(float)
    auc, var = delong_auroc(y, s)
    assert auc == pytest.approx(0.8932, abs=5e-5)  # the published area, to its 4 decimals
    # Hanley-McNeil's exponential approximation of the SE, recomputed: 0.03249.
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    se_hm = np.sqrt((auc * (1 - auc) + 50 * (q1 - auc ** 2) + 57 * (q2 - auc ** 2)) / (51 * 58))
    assert se_hm == pytest.approx(0.0325, abs=1e-4)
    # DeLong's nonparametric SE is a different estimator (0.03072 here): agree within 0.002 with both the
    # published 0.0320 and the recomputed Hanley-McNeil value.
    assert np.sqrt(var) == pytest.approx(0.03072, abs=1e-5)
    assert np.sqrt(var) == pytest.approx(0.0320, abs=0.002)
    assert np.sqrt(var) == pytest.approx(se_hm, abs=0.002)


def test_bootstrap_indices_stratified_and_seeded():
    y = np.r_[np.zeros(30, int), np.ones(12, int)]
    np.random.default_rng(0).shuffle(y)
    idx = bootstrap_indices(y, n_resamples=200, seed=3)
    assert idx.shape == (200, 42) and idx.dtype.kind == "i"
    assert (y[idx] == y).all()  # every resample keeps the class counts (column-wise, even)
    assert np.array_equal(idx, bootstrap_indices(y, n_resamples=200, seed=3))
    assert not np.array_equal(idx, bootstrap_indices(y, n_resamples=200, seed=4))
    assert len(np.unique(idx[0])) < 42  # with replacement
    plain = bootstrap_indices(y, n_resamples=200, seed=3, stratified=False)
    assert (y[plain].sum(axis=1) != 12).any()
    classes = np.repeat([0, 1, 2, 3], [5, 9, 20, 1])  # class-index vector
    idx = bootstrap_indices(classes, n_resamples=50, seed=0)
    assert (classes[idx] == classes).all()


def test_bootstrap_auroc_ci_equals_loop_over_sklearn():
    rng = np.random.default_rng(5)
    y = (rng.random(120) < 0.3).astype(int)
    s = np.round(rng.normal(size=120) + 1.2 * y, 1)
    auc, lo, hi = bootstrap_auroc_ci(y, s, n_resamples=300, seed=7)
    idx = bootstrap_indices(y, n_resamples=300, seed=7)
    ref = [roc_auc_score(y[i], s[i]) for i in idx]
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])), abs=1e-12)
    assert lo < auc < hi
    assert bootstrap_auroc_ci(y, s, n_resamples=300, seed=7) == (auc, lo, hi)


def test_ci_coverage_binormal():
    # 500 simulated studies, 60 positives ~ N(d, 1) and 90 negatives ~ N(0, 1): AUROC = Phi(d / sqrt 2) = 0.8.
    # Bootstrap with 500 resamples per study (not 1000) to keep the test fast.
    true_auc = 0.8
    d = np.sqrt(2) * norm.ppf(true_auc)
    rng = np.random.default_rng(2024)
    y = np.r_[np.ones(60, int), np.zeros(90, int)]
    hits_boot = hits_delong = 0
    studies = 500
    for k in range(studies):
        s = rng.normal(size=150) + d * y
        _, lo, hi = bootstrap_auroc_ci(y, s, n_resamples=500, seed=k)
        hits_boot += lo <= true_auc <= hi
        _, lo, hi = delong_ci(y, s)
        hits_delong += lo <= true_auc <= hi
    assert abs(hits_boot / studies - 0.95) <= 0.03, hits_boot
    assert abs(hits_delong / studies - 0.95) <= 0.03, hits_delong


def test_threshold_metrics_hand_counts():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.4, 0.6, 0.7, 0.2, 0.1, 0.3, 0.5, 0.05])
    # prob >= 0.5: TP = 3 (0.9, 0.8, 0.6), FN = 1 (0.4), FP = 2 (0.7 and 0.5 on the threshold), TN = 4
    m = threshold_metrics(y, p, 0.5)
    assert m == pytest.approx({"sensitivity": 3 / 4, "specificity": 4 / 6, "accuracy": 7 / 10,
                               "f1": 6 / 9, "ppv": 3 / 5, "npv": 4 / 5}, abs=1e-15)
    with pytest.warns(RuntimeWarning, match="ppv"):
        m = threshold_metrics(y, p, 0.95)  # nothing predicted positive
    assert np.isnan(m["ppv"]) and m["sensitivity"] == 0 and m["specificity"] == 1


def test_bootstrap_threshold_cis_stratified_and_contains_point():
    rng = np.random.default_rng(11)
    y = (rng.random(200) < 0.25).astype(int)
    p = np.clip(0.35 * y + 0.65 * rng.random(200), 0, 1)
    cis = bootstrap_threshold_cis(y, p, 0.5, n_resamples=400, seed=2)
    point = threshold_metrics(y, p, 0.5)
    assert set(cis) == set(point) == {"sensitivity", "specificity", "accuracy", "f1", "ppv", "npv"}
    idx = bootstrap_indices(y, n_resamples=400, seed=2)
    assert (y[idx].sum(axis=1) == y.sum()).all()  # the resamples it uses keep the class counts
    for k, (pt, lo, hi) in cis.items():
        assert pt == point[k] and lo <= pt <= hi and lo < hi
        ref = [threshold_metrics(y[i], p[i], 0.5)[k] for i in idx]
        assert (lo, hi) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])), abs=1e-12)


def test_youden_known_answers():
    assert youden_threshold([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]) == 0.6  # J = 1
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    # t = 0.6: sens 3/4, spec 1 (J = .75); t = 0.3: sens 1, spec 1/2 (J = .5); t = 0.7: J = .5
    assert youden_threshold(y, [0.1, 0.2, 0.35, 0.5, 0.3, 0.6, 0.7, 0.8]) == 0.6
    # a tie in J (0.6 and 0.4 both give .75) goes to the higher threshold
    assert youden_threshold(y, [0.1, 0.2, 0.3, 0.5, 0.4, 0.6, 0.7, 0.8]) == 0.6
    rng = np.random.default_rng(0)
    yy = (rng.random(300) < 0.5).astype(int)
    pp = rng.random(300) * 0.6 + 0.4 * yy
    t = youden_threshold(yy, pp)
    thr = roc_curve(yy, pp)[2]
    j = lambda th: np.mean(pp[yy == 1] >= th) + np.mean(pp[yy == 0] < th) - 1  # noqa: E731
    assert j(t) == pytest.approx(max(j(th) for th in thr[1:]), abs=1e-12)


def test_calibration_ece_and_brier():
    # perfectly calibrated bins: in every bin the positive fraction equals the (constant) probability
    y = np.r_[[1] + [0] * 9, [1] * 3 + [0] * 7, [1] * 7 + [0] * 3, [1] * 10]
    p = np.r_[[0.1] * 10, [0.3] * 10, [0.7] * 10, [1.0] * 10]
    c = calibration(y, p, bins=10)
    assert c["ece"] == pytest.approx(0.0, abs=1e-12)
    assert c["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-15)
    assert c["bin_edges"] == pytest.approx(np.linspace(0, 1, 11).tolist())
    # 0.1, 0.3, 0.7 sit on edges and go to the bin above ([0.1, 0.2) ...); 1.0 goes to the last bin
    assert c["bin_count"] == [0, 10, 0, 10, 0, 0, 0, 10, 0, 10]
    assert np.isnan(c["bin_confidence"][0]) and np.isnan(c["bin_accuracy"][0])
    assert c["bin_accuracy"][9] == 1.0 and c["bin_confidence"][7] == pytest.approx(0.7)
    # hand-computed ECE: 4 at 0.15 with no positive, 2 at 0.95 both positive
    c = calibration([0, 0, 0, 0, 1, 1], [0.15] * 4 + [0.95] * 2, bins=10)
    assert c["ece"] == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.05, abs=1e-12)
    rng = np.random.default_rng(3)
    yy, pp = (rng.random(500) < 0.3).astype(int), rng.random(500)
    assert calibration(yy, pp, bins=15)["brier"] == pytest.approx(brier_score_loss(yy, pp), abs=1e-15)
    assert sum(calibration(yy, pp, bins=15)["bin_count"]) == 500


def test_roc_and_pr_bands():
    rng = np.random.default_rng(8)
    y = (rng.random(250) < 0.35).astype(int)
    s = np.round(rng.normal(size=250) + 1.3 * y, 1)
    band = roc_band(y, s, n_resamples=500, seed=1)
    grid = np.linspace(0, 1, 101)
    assert band["fpr"] == pytest.approx(grid.tolist())
    lo, tpr, hi = (np.array(band[k]) for k in ("tpr_low", "tpr", "tpr_high"))
    assert (lo <= tpr).all() and (tpr <= hi).all() and (lo < hi).any()
    assert tpr[-1] == 1.0 and (np.diff(tpr) >= 0).all()
    # the point curve is sklearn's ROC, linear between thresholds, upper value on vertical steps
    fpr_s, tpr_s, _ = roc_curve(y, s)
    ref = [tpr_s[np.isclose(fpr_s, f) | (fpr_s < f)].max() if np.isclose(fpr_s, f).any()
           else np.interp(f, fpr_s, tpr_s) for f in grid]
    assert tpr == pytest.approx(ref, abs=1e-12)
    assert np.trapezoid(tpr, grid) == pytest.approx(roc_auc_score(y, s), abs=0.01)

    pr = pr_band(y, s, n_resamples=500, seed=1, grid=51)
    plo, prec, phi = (np.array(pr[k]) for k in ("precision_low", "precision", "precision_high"))
    assert len(prec) == 51 and (plo <= prec).all() and (prec <= phi).all()
    p_s, r_s, _ = precision_recall_curve(y, s)
    assert prec == pytest.approx([p_s[r_s >= r - 1e-12].max() for r in pr["recall"]], abs=1e-12)
    assert roc_band(y, s, n_resamples=500, seed=1) == band  # seeded


def test_one_valued_labels_give_nan_and_warning():
    y, s = np.ones(20, int), np.linspace(0, 1, 20)
    for fn in (delong_auroc, delong_ci, bootstrap_auroc_ci):
        with pytest.warns(RuntimeWarning, match="single value"):
            out = fn(y, s)
        assert np.isnan(out).all()
    with pytest.warns(RuntimeWarning, match="single value"):
        assert np.isnan(youden_threshold(1 - y, s))
    with pytest.warns(RuntimeWarning, match="single value"):
        band = roc_band(y, s, n_resamples=50)
    assert np.isnan(band["tpr"]).all() and np.isnan(band["tpr_low"]).all()
    with pytest.warns(RuntimeWarning, match="single value"):
        assert np.isnan(pr_band(1 - y, s, n_resamples=50)["precision"]).all()
    with pytest.warns(RuntimeWarning, match="specificity"):
        m = threshold_metrics(y, s, 0.5)
    assert np.isnan(m["specificity"]) and m["sensitivity"] == 0.5
    with pytest.warns(RuntimeWarning, match="specificity"):
        cis = bootstrap_threshold_cis(y, s, 0.5, n_resamples=50)
    assert np.isnan(cis["specificity"]).all() and cis["sensitivity"][0] == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = calibration(y, s)  # calibration is defined for one-valued labels
    assert c["brier"] == pytest.approx(brier_score_loss(y, s))
