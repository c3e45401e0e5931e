"""Loss formulas and the orientation of the class names in every report."""

import json
import math

import numpy as np
import pytest
import torch

from alzheimer_mosa.config import LossConfig
from alzheimer_mosa.metrics_utils import compute_metrics, per_class_report, scalar_metrics
from alzheimer_mosa.training import make_loss
from shared import write_json


def test_focal_loss_matches_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-1.0, 1.0, 0.0]])
    targets = torch.tensor([0, 1, 2])
    alpha, gamma = [0.2, 0.3, 0.5], 2.0
    loss = make_loss(LossConfig(name="focal", alpha=alpha, gamma=gamma))(logits, targets)
    expected = 0.0
    for row, t in zip(logits.tolist(), targets.tolist()):
        p_t = math.exp(row[t]) / sum(math.exp(v) for v in row)
        expected += -alpha[t] * (1 - p_t) ** gamma * math.log(p_t)  # FL = -alpha_t (1 - p_t)^gamma log p_t
    assert loss.item() == pytest.approx(expected / 3, rel=1e-5)


def test_focal_with_gamma_zero_and_no_alpha_is_cross_entropy():
    logits, targets = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0])
    focal = make_loss(LossConfig(name="focal", gamma=0.0))(logits, targets)
    assert focal.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-6)


def test_label_smoothing_matches_formula():
    logits, targets, eps = torch.tensor([[3.0, 0.0]]), torch.tensor([0]), 0.2
    log_p = torch.log_softmax(logits, 1)[0]
    expected = -((1 - eps + eps / 2) * log_p[0] + (eps / 2) * log_p[1])
    loss = make_loss(LossConfig(label_smoothing=eps))(logits, targets)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_report_keeps_class_order_from_labels_to_confusion_matrix(tmp_path):
    """Known labels and predictions: rows are the true class, columns the predicted one, in config order.

    Four CN scans: three predicted CN, one AD. Two AD scans: both predicted AD. (The source document's
    report swaps the two names.)
    """
    class_names = ["CN", "AD"]
    y_true = np.array([0, 0, 0, 0, 1, 1])
    prob_ad = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7])
    y_prob = np.stack([1 - prob_ad, prob_ad], axis=1)
    metrics = compute_metrics(y_true, y_prob, class_names, positive_index=1)
    assert metrics["confusion_matrix"] == [[3, 1], [0, 2]]
    report = per_class_report(metrics, class_names, y_true)
    assert list(report) == ["CN", "AD"]
    assert report["CN"] == pytest.approx({"precision": 1.0, "recall": 0.75, "f1": 6 / 7, "specificity": 1.0,
                                          "auc": 0.75, "support": 4})
    assert report["AD"]["recall"] == 1.0 and report["AD"]["precision"] == pytest.approx(2 / 3)
    summary = scalar_metrics(metrics)
    assert summary["recall"] == 1.0 and summary["specificity"] == 0.75  # of the positive class AD
    assert summary["accuracy"] == pytest.approx(5 / 6)
    written = json.loads(write_json(tmp_path / "r.json", {"classes": report, "nan": float("nan")}).read_text())
    assert written["classes"]["AD"]["support"] == 2 and written["nan"] is None


def test_multiclass_auc_is_one_vs_rest_macro():
    y_true = np.array([0, 1, 2, 0, 1, 2])
    y_prob = np.eye(3)[[0, 1, 2, 1, 1, 2]] * 0.8 + 0.2 / 3
    metrics = compute_metrics(y_true, y_prob, ["CN", "MCI", "AD"], positive_index=2)
    assert metrics["auc"] == pytest.approx(np.mean([metrics[f"auc/{c}"] for c in ["CN", "MCI", "AD"]]))
    assert "specificity_macro" in scalar_metrics(metrics)
