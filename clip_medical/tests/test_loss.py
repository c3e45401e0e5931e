import math

import pytest
import torch
import torch.nn.functional as F

from clip_medical.losses import class_logits, multi_positive_contrastive_loss


def direct_formula(logits: list[list[float]], labels: list[int]) -> float:
    """The loss written out with loops: image->text CE over classes, and for each class present in
    the batch the mean over its images of -log softmax over all images of that text's column."""
    batch, classes = len(logits), len(logits[0])
    image_to_text = sum(
        -(logits[i][labels[i]] - math.log(sum(math.exp(logits[i][c]) for c in range(classes))))
        for i in range(batch)) / batch
    per_text = []
    for c in range(classes):
        positives = [i for i in range(batch) if labels[i] == c]
        if not positives:
            continue
        log_norm = math.log(sum(math.exp(logits[j][c]) for j in range(batch)))
        per_text.append(sum(-(logits[i][c] - log_norm) for i in positives) / len(positives))
    return 0.5 * (image_to_text + sum(per_text) / len(per_text))


def test_matches_direct_formula_with_repeated_classes_and_an_absent_class():
    torch.manual_seed(0)
    labels = [0, 1, 0, 2, 1, 0]  # class 3 is absent from the batch
    logits = torch.randn(6, 4, dtype=torch.float64) * 3
    loss = multi_positive_contrastive_loss(logits, torch.tensor(labels))
    assert loss.item() == pytest.approx(direct_formula(logits.tolist(), labels), rel=1e-6)


def test_reduces_to_clip_loss_with_one_image_per_class():
    torch.manual_seed(1)
    logits = torch.randn(5, 5)
    targets = torch.arange(5)
    clip = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    torch.testing.assert_close(multi_positive_contrastive_loss(logits, targets), clip)


def test_same_class_images_are_not_negatives():
    """Two images of class 0 that both match text 0 perfectly: the arange-style loss would punish
    their similarity; ours is at its minimum for the image->text part and for text 1."""
    logits = torch.tensor([[10.0, -10.0], [10.0, -10.0], [-10.0, 10.0]])
    labels = torch.tensor([0, 0, 1])
    loss = multi_positive_contrastive_loss(logits, labels)
    # image->text ~ 0; text 0 spreads its probability evenly over its two positives, so its term
    # is log 2 (the entropy floor of a two-positive target) and text 1's term is ~ 0
    assert loss.item() == pytest.approx(0.5 * (0 + (math.log(2) + 0) / 2), abs=1e-4)


def test_gradient_flows_through_scaled_cosine_logits():
    image = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(3, 8), dim=-1).requires_grad_()
    scale = torch.tensor(1 / 0.07, requires_grad=True)
    multi_positive_contrastive_loss(class_logits(image, text, scale), torch.tensor([0, 2, 2, 1])).backward()
    assert image.grad.abs().sum() > 0 and text.grad.abs().sum() > 0 and scale.grad.abs() > 0
