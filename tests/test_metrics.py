"""Metrics against scikit-learn, and NaN + warning for a class with a single label value."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

from shared import multiclass_metrics, multilabel_metrics, tune_thresholds


def test_multilabel_against_sklearn_with_one_value_class():
    rng = np.random.default_rng(0)
    y = (rng.random((50, 3)) > 0.5).astype(int)
    y[:, 2] = 0  # a finding with no positives in this set
    prob = np.clip(y * 0.3 + rng.random((50, 3)) * 0.7, 0, 1)
    with pytest.warns(RuntimeWarning, match="single value"):
        m = multilabel_metrics(y, prob, ["a", "b", "c"])
    assert np.isnan(m["auroc/c"]) and np.isnan(m["ap/c"])
    for c, name in enumerate("ab"):
        assert m[f"auroc/{name}"] == pytest.approx(roc_auc_score(y[:, c], prob[:, c]))
        assert m[f"ap/{name}"] == pytest.approx(average_precision_score(y[:, c], prob[:, c]))
        assert m[f"f1/{name}"] == pytest.approx(f1_score(y[:, c], prob[:, c] >= 0.5))
    assert m["macro_auroc"] == pytest.approx(np.mean([roc_auc_score(y[:, c], prob[:, c]) for c in range(2)]))
    assert m["micro_auroc"] == pytest.approx(roc_auc_score(y.ravel(), prob.ravel()))
    pred = prob[:, 0] >= 0.5
    assert m["sensitivity/a"] == pytest.approx(pred[y[:, 0] == 1].mean())
    assert m["specificity/a"] == pytest.approx((~pred[y[:, 0] == 0]).mean())


def test_tuned_thresholds_maximise_f1():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 2)) > 0.7).astype(int)
    prob = np.clip(0.2 + 0.3 * y + rng.normal(0, 0.15, y.shape), 0, 1)  # positives around 0.5, below 0.5 often
    thresholds = tune_thresholds(y, prob)
    best = [max(f1_score(y[:, c], prob[:, c] >= t) for t in np.unique(prob[:, c])) for c in range(2)]
    m = multilabel_metrics(y, prob, ["a", "b"], thresholds)
    assert m["macro_f1_tuned"] == pytest.approx(np.mean(best))
    assert m["macro_f1_tuned"] >= m["macro_f1"]


def test_multiclass_against_sklearn_and_orientation():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 0, 1, 1, 2, 0, 2, 2])
    prob = np.eye(3)[pred] * 0.8 + 0.2 / 3
    m = multiclass_metrics(y, prob, ["x", "y", "z"])
    assert m["accuracy"] == pytest.approx(7 / 9)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 3]]  # rows true, columns predicted
    assert m["specificity/x"] == pytest.approx(5 / 6)
    assert m["auc"] == pytest.approx(roc_auc_score(y, prob, multi_class="ovr"))


def test_binary_auc_uses_positive_class_and_single_class_is_nan():
    y = np.array([0, 0, 1, 1])
    prob1 = np.array([0.1, 0.6, 0.4, 0.9])
    prob = np.stack([1 - prob1, prob1], 1)
    m = multiclass_metrics(y, prob, ["CN", "AD"], positive_class=1)
    assert m["auc"] == pytest.approx(roc_auc_score(y, prob1))
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == pytest.approx(0.5)
    with pytest.warns(RuntimeWarning):
        single = multiclass_metrics(np.zeros(4, int), prob, ["CN", "AD"])
    assert np.isnan(single["auc"])
