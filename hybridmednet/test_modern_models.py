"""Check every backbone x attention combination: forward, backward, output shape; print a parameter table.

    cd hybridmednet && python test_modern_models.py [--backbones convnext_tiny,vim_tiny] [--image_size 224]

This is the guide's stand-alone checker (the pytest suite lives in tests/). It exits non-zero when
any combination fails, after reporting all of them.
"""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from typing import Sequence

import torch

from hybridmednet.benchmark import build_variant, names
from hybridmednet.models.attention import ATTENTION_SETTINGS
from hybridmednet.models.backbones import BACKBONES
from hybridmednet.profiling import count_parameters
from shared import parse_cli, run_cli


@dataclass
class CheckConfig:
    backbones: str = "all"  # comma-separated backbone names, or all (models/backbones.py BACKBONES)
    attention: str = ",".join(ATTENTION_SETTINGS)  # comma-separated attention settings (cbam, cbam+cross, mhsa, mhsa+cross)
    image_size: int = 224  # input height and width, pixels


def check_combination(backbone: str, attention: str, image_size: int) -> str:
    """Forward + backward on a batch of 2; returns the parameter count, raises on any problem."""
    model = build_variant(backbone, attention)
    output = model(torch.randn(2, 3, image_size, image_size))
    if output.shape != (2, model.num_classes):
        raise AssertionError(f"output shape {tuple(output.shape)}")
    output.float().square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        raise AssertionError(f"{len(missing)} parameters got no gradient, e.g. {missing[:3]}")
    return f"{count_parameters(model) / 1e6:.1f}M"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_cli(CheckConfig, argv, description=__doc__.split("\n\n")[0])
    backbones = list(BACKBONES) if args.backbones == "all" else names(args.backbones, BACKBONES, "backbones")
    attentions = names(args.attention, ATTENTION_SETTINGS, "attention")
    failures = 0
    print(f"{'backbone':<18} {'attention':<11} {'params':>8}  status")
    for backbone in backbones:
        for attention in attentions:
            try:
                params, status = check_combination(backbone, attention, args.image_size), "ok (forward + backward)"
            except Exception as err:  # report every combination, then fail at the end
                params, status = "-", f"FAILED: {err}"
                traceback.print_exc()
                failures += 1
            print(f"{backbone:<18} {attention:<11} {params:>8}  {status}", flush=True)
    print(f"\n{failures} of {len(backbones) * len(attentions)} combinations failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
