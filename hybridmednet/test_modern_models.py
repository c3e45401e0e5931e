"""Check every backbone x attention combination: forward, backward, output shape; print a parameter table.

    cd hybridmednet && python test_modern_models.py [--backbones convnext_tiny vim_tiny] [--image-size 224]

This is the guide's stand-alone checker (the pytest suite lives in tests/). It exits non-zero when
any combination fails, after reporting all of them.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Sequence

import torch

from hybridmednet.benchmark import build_variant
from hybridmednet.models.attention import ATTENTION_SETTINGS
from hybridmednet.models.backbones import BACKBONES
from hybridmednet.profiling import count_parameters


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--attention", nargs="+", default=list(ATTENTION_SETTINGS), choices=list(ATTENTION_SETTINGS))
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args(argv)
    failures = 0
    print(f"{'backbone':<18} {'attention':<11} {'params':>8}  status")
    for backbone in args.backbones:
        for attention in args.attention:
            try:
                params, status = check_combination(backbone, attention, args.image_size), "ok (forward + backward)"
            except Exception as err:  # report every combination, then fail at the end
                params, status = "-", f"FAILED: {err}"
                traceback.print_exc()
                failures += 1
            print(f"{backbone:<18} {attention:<11} {params:>8}  {status}", flush=True)
    print(f"\n{failures} of {len(args.backbones) * len(args.attention)} combinations failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
