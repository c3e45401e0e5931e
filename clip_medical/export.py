"""The exported zero-shot classifier: the shared export format (``export/model.safetensors`` + ``model.json``).

What inference needs is inside the export, so nothing is downloaded and no tokenizer is needed to classify
with the trained classes:

* the weights of both towers and of the projections (``clip.*``);
* ``class_embeddings`` [C, embed_dim]: the unit-norm text embeddings of the trained class texts, a buffer,
  so ``model(images)`` gives the class logits ``[B, C]`` (softmax = class probabilities) directly;
* ``model.json``: task ``zero-shot``, the architecture (image encoder name and input size, the text
  encoder's config, embed_dim, number of classes), class names, preprocessing, and in ``extra`` the class
  texts and the tokenizer folder;
* ``export/tokenizer/``: the tokenizer files (vocab), only needed to try *new* class texts
  (``predict.py --class-text.NAME TEXT``): :meth:`ZeroShotClassifier.set_class_texts`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from shared import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, export_model, register_model
from clip_medical.losses import class_logits
from clip_medical.models import (CLIPModel, build_image_encoder, text_encoder_config, text_encoder_from_config,
                                 tokenize)

PROJECT = "clip_medical"
TOKENIZER_DIR = "tokenizer"  # inside the export folder


class ZeroShotClassifier(nn.Module):
    """A CLIP model with its class text embeddings stored: images [B, 3, H, W] -> class logits [B, C]."""

    def __init__(self, clip: CLIPModel, class_embeddings: torch.Tensor):
        super().__init__()
        self.clip = clip
        self.register_buffer("class_embeddings", class_embeddings.detach().clone())

    def set_class_texts(self, tokenizer, texts: Sequence[str]) -> None:
        """Replace the stored classes by other class texts (what ``predict.py --class-text.NAME TEXT`` does)."""
        self.class_embeddings = self.embed_class_texts(tokenizer, texts)

    @torch.no_grad()
    def embed_class_texts(self, tokenizer, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings [C, embed_dim] of other class texts, for ``forward(..., class_embeddings=)``."""
        tokens = tokenize(tokenizer, list(texts))
        device = self.class_embeddings.device
        return self.clip.encode_text(**{k: v.to(device) for k, v in tokens.items()}).float()

    def forward(self, images: torch.Tensor, class_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits [B, C] against the stored class texts, or against ``class_embeddings`` when given."""
        classes = self.class_embeddings if class_embeddings is None else class_embeddings
        return class_logits(self.clip.encode_image(images), classes, self.clip.clamped_logit_scale())


@register_model(PROJECT)
def build_zero_shot_classifier(architecture: Mapping[str, Any]) -> ZeroShotClassifier:
    """The exported architecture with random weights (``shared.load_export`` then loads the weights)."""
    image_encoder = build_image_encoder(architecture["image_encoder"], pretrained=False,
                                        img_size=architecture["img_size"])
    clip = CLIPModel(image_encoder, text_encoder_from_config(architecture["text_encoder_config"]),
                     embed_dim=architecture["embed_dim"])
    return ZeroShotClassifier(clip, torch.zeros(architecture["num_classes"], architecture["embed_dim"]))


@torch.no_grad()
def export_zero_shot(clip: CLIPModel, tokenizer, tokens: Mapping[str, torch.Tensor], out_dir: str | Path, *,
                     image_encoder: str, img_size: int, class_names: Sequence[str], class_texts: Sequence[str],
                     extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``out_dir`` (the shared export format plus ``tokenizer/``) for a trained model and its class texts."""
    was_training = clip.training
    clip.eval()
    device = next(clip.parameters()).device
    class_embeddings = clip.encode_text(**{k: v.to(device) for k, v in tokens.items()}).float()
    clip.train(was_training)
    architecture = {"image_encoder": image_encoder, "img_size": img_size,
                    "embed_dim": clip.text_projection.out_features, "num_classes": len(class_names),
                    "text_encoder_config": text_encoder_config(clip.text_encoder)}
    out_dir = export_model(
        ZeroShotClassifier(clip, class_embeddings), out_dir, project=PROJECT, architecture=architecture,
        class_names=class_names, task="zero-shot",
        preprocessing=Preprocessing(size=(img_size, img_size), channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                    spatial_dims=2),
        extra={"class_texts": dict(zip(class_names, class_texts)), "tokenizer_dir": TOKENIZER_DIR,
               "temperature": clip.temperature, **(extra or {})})
    tokenizer.save_pretrained(out_dir / TOKENIZER_DIR)
    return out_dir
