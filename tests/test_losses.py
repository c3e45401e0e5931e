"""Each loss against its formula written out directly."""
import math

import pytest
import torch
import torch.nn.functional as F

from shared import AsymmetricLoss, BinaryFocalLoss, FocalLoss, SoftTargetCrossEntropy, build_loss, \
    pos_weight_from_labels


@pytest.fixture
def multilabel():
    torch.manual_seed(0)
    return torch.randn(6, 5) * 3, (torch.rand(6, 5) > 0.6).float()


def test_asl_matches_paper_formula(multilabel):
    logits, y = multilabel
    gamma_neg, gamma_pos, clip, eps = 4.0, 1.0, 0.05, 1e-8
    total = 0.0
    for i in range(6):
        for j in range(5):
            p = 1 / (1 + math.exp(-logits[i, j].item()))
            if y[i, j] == 1:
                total += -((1 - p) ** gamma_pos) * math.log(max(p, eps))
            else:
                p_m = max(p - clip, 0.0)  # probability shifting
                total += -(p_m ** gamma_neg) * math.log(max(1 - p_m, eps))
    loss = AsymmetricLoss(gamma_neg, gamma_pos, clip, eps, reduction="sum")(logits, y)
    assert loss.item() == pytest.approx(total, rel=1e-5)
    mean = AsymmetricLoss(gamma_neg, gamma_pos, clip, eps)(logits, y)
    assert mean.item() == pytest.approx(total / 6, rel=1e-5)  # mean over samples of the per-sample sum


def test_asl_without_focusing_or_clip_is_bce(multilabel):
    logits, y = multilabel
    loss = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0, reduction="sum")(logits, y)
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, y, reduction="sum").item(), rel=1e-5)


def test_binary_focal_formula(multilabel):
    logits, y = multilabel
    p = torch.sigmoid(logits)
    p_t = torch.where(y == 1, p, 1 - p)
    alpha_t = torch.where(y == 1, 0.25, 0.75)
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert BinaryFocalLoss(0.25, 2.0)(logits, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_multiclass_focal_formula_with_per_class_alpha():
    torch.manual_seed(1)
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    alpha = torch.tensor([0.2, 0.3, 0.5])
    p_t = torch.softmax(logits, 1)[torch.arange(8), y]
    expected = (-alpha[y] * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    got = FocalLoss(alpha=[0.2, 0.3, 0.5], gamma=2.0)(logits, y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert FocalLoss(gamma=0.0)(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_weighted_bce_pos_weight_from_label_frequencies():
    labels = torch.tensor([[1, 0], [0, 0], [0, 1], [0, 0]], dtype=torch.float32)
    pos_weight = pos_weight_from_labels(labels)
    assert pos_weight.tolist() == [3.0, 3.0]
    logits = torch.tensor([[0.5, -1.0], [0.2, 0.3], [-0.4, 1.2], [0.0, 0.0]])
    expected = -(3.0 * labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits)).mean()
    loss = build_loss("weighted_bce", pos_weight=pos_weight)(logits, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_label_smoothing_and_soft_target_ce():
    torch.manual_seed(2)
    logits, y = torch.randn(4, 5), torch.tensor([0, 3, 1, 4])
    eps = 0.1
    soft = torch.full((4, 5), eps / 5) + (1 - eps) * F.one_hot(y, 5)
    expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    smoothed = build_loss("cross_entropy", label_smoothing=eps)(logits, y)
    assert smoothed.item() == pytest.approx(expected.item(), rel=1e-6)
    assert SoftTargetCrossEntropy()(logits, soft).item() == pytest.approx(expected.item(), rel=1e-6)


def test_unknown_loss_name_lists_choices():
    with pytest.raises(ValueError, match="asymmetric_loss"):
        build_loss("asymetric")
