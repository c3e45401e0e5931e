"""Symmetric image-text contrastive loss with class-level positives (UniCL-style).

The guide's original used CLIP's ``arange`` targets: image i matches only text i. With class texts
every image of a class shares one text, so same-class pairs became false negatives, and with few
classes that is most of the batch. Here the text side is the set of class texts and every image of
class c is a positive for text c.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_logits(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Scaled cosine similarities ``[B, C]`` between unit-norm image ``[B, E]`` and class-text ``[C, E]`` embeddings."""
    return logit_scale * image_emb @ text_emb.t()


def multi_positive_contrastive_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of the image->text and text->image losses for class-text logits ``[B, C]`` and labels ``[B]``.

    * image->text: cross-entropy of each image over the C class texts (exactly one positive);
    * text->image: for each class text c present in the batch, cross-entropy over the B images
      against the uniform target on that class's images, i.e. -mean_{i: y_i = c} log softmax_i;
      texts without an image in the batch have no target and are left out.

    With one image per class and C = B this is CLIP's loss.
    """
    logits = logits.float()
    image_to_text = F.cross_entropy(logits, labels)

    # Masks and weights instead of boolean indexing: no host-device synchronisation in the loss.
    classes = torch.arange(logits.shape[1], device=labels.device)
    positives = (labels[None, :] == classes[:, None]).float()  # [C, B]
    counts = positives.sum(dim=1)
    present = (counts > 0).float()
    log_probs = F.log_softmax(logits.t(), dim=1)  # [C, B], softmax over images
    per_text = -(positives * log_probs).sum(dim=1) / counts.clamp(min=1)  # rows of positives / count sum to 1
    text_to_image = (per_text * present).sum() / present.sum()
    return 0.5 * (image_to_text + text_to_image)
