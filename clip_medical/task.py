"""How the shared engine trains and evaluates the CLIP model."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from accelerate.utils import extract_model_from_parallel

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

    task_type = "zero-shot"  # shared.evaluate_best: softmax over the class texts

    def __init__(self, class_tokens: dict[str, torch.Tensor], class_names: list[str]):
        self.class_tokens = class_tokens  # input_ids / attention_mask [C, L]
        self.class_names = list(class_names)
        self._eval_text: tuple[torch.Tensor, torch.Tensor] | None = None  # one evaluation's text side

    def _tokens(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {name: value.to(device) for name, value in self.class_tokens.items()}

    def logits(self, model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits [B, C] and the logit scale 1/T, both towers in one forward (training)."""
        image_emb, text_emb, logit_scale = model(images, **self._tokens(images.device))
        return class_logits(image_emb, text_emb, logit_scale), logit_scale

    def on_eval_start(self, model: torch.nn.Module) -> None:
        self._eval_text = None  # encoded on the evaluation's first batch, under its autocast

    def eval_logits(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Class logits [B, C] without gradients: the class texts do not change during an evaluation, so
        they go through the text encoder once (after :meth:`on_eval_start`), not once per batch."""
        clip = extract_model_from_parallel(model)
        if self._eval_text is None:
            self._eval_text = clip.encode_text(**self._tokens(images.device)), clip.clamped_logit_scale()
        text_emb, logit_scale = self._eval_text
        return class_logits(clip.encode_image(images), text_emb, logit_scale)

    def training_step(self, model, batch) -> dict[str, Any]:
        self._eval_text = None  # the weights change from here on
        images, labels = batch
        logits, logit_scale = self.logits(model, images)
        accuracy = (logits.argmax(dim=1) == labels).float().mean() * 100
        return {"loss": multi_positive_contrastive_loss(logits, labels), "acc": accuracy,
                "temperature": 1.0 / logit_scale.detach()}

    def eval_step(self, model, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = self.eval_logits(model, images)
        batch_loss = multi_positive_contrastive_loss(logits, labels)
        return {"logits": logits.float(), "targets": labels, "batch_loss": batch_loss.detach().expand(len(labels))}

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        metrics = multiclass_metrics(outputs["targets"], zero_shot_probabilities(outputs["logits"]), self.class_names)
        metrics["acc"] = 100.0 * metrics["accuracy"]
        metrics["loss"] = float(outputs["batch_loss"].mean())
        return metrics
