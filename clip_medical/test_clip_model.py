"""Check, before training, that every encoder builds and runs (the guide's ``test_clip_model.py``).

For each image encoder: construction and a forward pass giving ``[B, num_features]``; for the text
encoder: a forward pass on Chinese text; for the full CLIP model: unit-norm ``[B, embed_dim]``
embeddings and the temperature. Exits non-zero if any check fails. Offline, pass a local text
encoder directory (``python -m clip_medical.demo`` writes a tiny one).

    python clip_medical/test_clip_model.py --text-encoder bert-base-chinese --img-size 224
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from shared import parse_cli, run_cli
from clip_medical.models import IMAGE_ENCODERS, build_clip_model, build_image_encoder, load_text_encoder, tokenize

SAMPLE_TEXTS = ["这是一张正常的胸部X光图像", "这是一张显示肺炎病变的胸部X光图像"]


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def check_image_encoder(name: str, img_size: int, pretrained: bool, batch: int = 2) -> str:
    encoder = build_image_encoder(name, pretrained=pretrained, img_size=img_size).eval()
    features = encoder(torch.randn(batch, 3, img_size, img_size))
    if features.shape != (batch, encoder.num_features):
        raise AssertionError(f"expected [{batch}, {encoder.num_features}], got {list(features.shape)}")
    return f"features {list(features.shape)}, {parameter_count(encoder) / 1e6:.2f}M parameters"


@torch.no_grad()
def check_text_encoder(text_encoder: str) -> str:
    model, tokenizer = load_text_encoder(text_encoder)
    tokens = tokenize(tokenizer, SAMPLE_TEXTS)
    if (tokens["input_ids"] == tokenizer.unk_token_id).any():
        raise AssertionError(f"the vocabulary does not cover the sample texts {SAMPLE_TEXTS}")
    hidden = model.eval()(**tokens).last_hidden_state
    return f"hidden states {list(hidden.shape)}, {parameter_count(model) / 1e6:.2f}M parameters"


@torch.no_grad()
def check_clip_model(image_encoder: str, text_encoder: str, img_size: int, embed_dim: int, pretrained: bool) -> str:
    model, tokenizer = build_clip_model(image_encoder, text_encoder, embed_dim, img_size=img_size,
                                        pretrained_image=pretrained)
    image_emb, text_emb, logit_scale = model.eval()(torch.randn(2, 3, img_size, img_size),
                                                    **tokenize(tokenizer, SAMPLE_TEXTS))
    for what, emb in (("image", image_emb), ("text", text_emb)):
        if emb.shape != (2, embed_dim) or not torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-4):
            raise AssertionError(f"{what} embeddings are not unit-norm [2, {embed_dim}]: {list(emb.shape)}")
    return f"embeddings [2, {embed_dim}], temperature {1 / logit_scale.item():.4f}"


def run_checks(checks: dict[str, Callable[[], str]]) -> int:
    failures = 0
    for label, check in checks.items():
        start = time.perf_counter()
        try:
            print(f"ok    {label}: {check()} ({time.perf_counter() - start:.1f}s)")
        except Exception:  # report every failing encoder, not only the first
            failures += 1
            print(f"FAIL  {label}:\n{traceback.format_exc()}")
    return failures


@dataclass
class CheckConfig:
    image_encoders: list[str] | str = "all"  # "all", one name, or a list "[resnet18, vit]" (the guide's names)
    text_encoder: str = "bert-base-chinese"  # BERT-style Hugging Face name or local directory
    img_size: int = 224  # input size of the forward checks
    embed_dim: int = 512  # CLIP embedding size of the full-model check
    pretrained: bool = False  # also load ImageNet weights (downloads)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_cli(CheckConfig, argv, description=__doc__)
    names = args.image_encoders
    names = list(IMAGE_ENCODERS) if names == "all" else [names] if isinstance(names, str) else names
    unknown = [name for name in names if name not in IMAGE_ENCODERS]
    if unknown:
        raise ValueError(f"unknown image encoder(s) {unknown}; choose from {list(IMAGE_ENCODERS)}")

    checks = {f"image encoder {name}": (lambda name=name: check_image_encoder(name, args.img_size, args.pretrained))
              for name in names}
    checks[f"text encoder {args.text_encoder}"] = lambda: check_text_encoder(args.text_encoder)
    checks[f"CLIP {names[0]} + {args.text_encoder}"] = lambda: check_clip_model(
        names[0], args.text_encoder, args.img_size, args.embed_dim, args.pretrained)
    failures = run_checks(checks)
    print(f"{len(checks) - failures}/{len(checks)} checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
