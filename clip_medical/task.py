"""How the shared engine trains and evaluates the CLIP model."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shared import Task, multiclass_metrics
from clip_medical.losses import class_logits, multi_positive_contrastive_loss


def zero_shot_probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the class texts of logits [N, C] (already scaled by the learned 1/T)."""
    return torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()


class ZeroShotCLIPTask(Task):
    """Batches are (images [B, 3, H, W], class indices [B]); the text side is always all class texts.

    Training minimises the multi-positive contrastive loss; evaluation classifies each image
    zero-shot (softmax over its similarity to every class text) and reports accuracy in percent
    (``acc``, as the guide), AUC, per-class precision/recall/F1 and the confusion matrix. ``loss``
    is the training objective on the validation batches (each batch weighted by its size).
    """

    def __init__(self, class_tokens: dict[str, torch.Tensor], class_names: list[str]):
        self.class_tokens = class_tokens  # input_ids / attention_mask [C, L]
        self.class_names = list(class_names)

    def logits(self, model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits [B, C] and the logit scale 1/T."""
        tokens = {name: value.to(images.device) for name, value in self.class_tokens.items()}
        image_emb, text_emb, logit_scale = model(images, **tokens)
        return class_logits(image_emb, text_emb, logit_scale), logit_scale

    def training_step(self, model, batch) -> dict[str, Any]:
        images, labels = batch
        logits, logit_scale = self.logits(model, images)
        accuracy = (logits.argmax(dim=1) == labels).float().mean() * 100
        return {"loss": multi_positive_contrastive_loss(logits, labels), "acc": accuracy,
                "temperature": 1.0 / logit_scale.detach()}

    def eval_step(self, model, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits, _ = self.logits(model, images)
        batch_loss = multi_positive_contrastive_loss(logits, labels)
        return {"logits": logits.float(), "labels": labels, "batch_loss": batch_loss.detach().expand(len(labels))}

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        metrics = multiclass_metrics(outputs["labels"], zero_shot_probabilities(outputs["logits"]), self.class_names)
        metrics["acc"] = 100.0 * metrics["accuracy"]
        metrics["loss"] = float(outputs["batch_loss"].mean())
        return metrics
