"""CLIP-style dual encoder: image and text embeddings in one unit-norm space, scaled by a learnable temperature."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from clip_medical.models.image_encoders import build_image_encoder

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: temperature never drops below 0.01
MAX_TEXT_TOKENS = 128  # class descriptions are sentences, far below BERT's 512


class CLIPModel(nn.Module):
    """Image encoder -> linear projection -> L2 norm; text encoder (CLS token) -> linear projection -> L2 norm.

    The temperature is learned as ``logit_scale = log(1 / T)`` (as in CLIP), clamped to
    ``[0, log 100]`` so that ``T`` stays in ``[0.01, 1]``.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: PreTrainedModel, embed_dim: int = 512,
                 temperature: float = 0.07):
        super().__init__()
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        if not 0.01 <= temperature <= 1.0:
            raise ValueError(f"temperature must lie in [0.01, 1] (CLIP's clamp range), got {temperature}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = nn.Linear(image_encoder.num_features, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_encoder.config.hidden_size, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        # images: [B, 3, H, W] -> [B, embed_dim], unit norm
        return F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # input_ids, attention_mask: [T, L] -> [T, embed_dim], unit norm (from the CLS token)
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.text_projection(hidden[:, 0]), dim=-1)

    def clamped_logit_scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.clamped_logit_scale().detach())

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Returns (image embeddings [B, E], text embeddings [T, E], logit scale 1/T as a 0-d tensor).

        One forward call for both towers, so DDP sees every parameter used in a single pass.
        """
        return self.encode_image(images), self.encode_text(input_ids, attention_mask), self.clamped_logit_scale()


def load_text_encoder(name_or_path: str, pretrained: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Any Hugging Face BERT-style encoder (hub name or local directory) and its tokenizer.

    ``pretrained=False`` builds the architecture from its config only (used when a checkpoint
    supplies the weights). The BERT pooler is dropped: we read the CLS hidden state directly, and
    an unused trainable pooler would break DDP's gradient bookkeeping.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if pretrained:
            model = AutoModel.from_pretrained(name_or_path)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(name_or_path))
    except OSError as err:
        raise OSError(
            f"Cannot load text encoder '{name_or_path}': {err}\n"
            "If the Hugging Face hub is unreachable, download the model once and pass its local directory "
            "(config.json, weights and vocab) to --text-encoder."
        ) from err
    return _without_pooler(model), tokenizer


def _without_pooler(model: PreTrainedModel) -> PreTrainedModel:
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def text_encoder_config(model: PreTrainedModel) -> dict:
    """The text encoder's architecture as plain JSON values (``model_type`` + non-default settings)."""
    config = model.config.to_diff_dict()
    config.pop("transformers_version", None)
    return config


def text_encoder_from_config(config: dict) -> PreTrainedModel:
    """A randomly initialised text encoder from :func:`text_encoder_config` (no download)."""
    config = dict(config)
    return _without_pooler(AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config)))


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> dict[str, torch.Tensor]:
    """Padded ``input_ids`` / ``attention_mask`` tensors ``[T, L]`` for a list of texts."""
    encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def build_clip_model(
    image_encoder: str,
    text_encoder: str,
    embed_dim: int = 512,
    temperature: float = 0.07,
    img_size: int = 224,
    pretrained_image: bool = True,
    pretrained_text: bool = True,
) -> tuple[CLIPModel, PreTrainedTokenizerBase]:
    """CLIP model and tokenizer from the guide's encoder names.

    Training starts from pretrained towers; rebuilding a trained model for inference passes
    ``False`` for both because the checkpoint supplies every weight.
    """
    text_model, tokenizer = load_text_encoder(text_encoder, pretrained=pretrained_text)
    image_model = build_image_encoder(image_encoder, pretrained=pretrained_image, img_size=img_size)
    return CLIPModel(image_model, text_model, embed_dim=embed_dim, temperature=temperature), tokenizer
