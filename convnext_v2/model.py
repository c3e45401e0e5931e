"""Both model families in one place, and a name -> constructor table (names as in timm)."""

from __future__ import annotations

from typing import Callable

from convnext_v2.ConvNeXtModelV1 import (
    ConvNeXt,
    convnext_base,
    convnext_large,
    convnext_small,
    convnext_tiny,
    convnext_xlarge,
)
from convnext_v2.ConvNeXtModelV2 import (
    GRN,
    ConvNeXtV2,
    convnextv2_atto,
    convnextv2_base,
    convnextv2_femto,
    convnextv2_huge,
    convnextv2_large,
    convnextv2_nano,
    convnextv2_pico,
    convnextv2_tiny,
)

__all__ = ["GRN", "MODELS", "ConvNeXt", "ConvNeXtV2", "create_model", "model_family"]

MODELS: dict[str, Callable[..., ConvNeXt]] = {
    "convnext_tiny": convnext_tiny,
    "convnext_small": convnext_small,
    "convnext_base": convnext_base,
    "convnext_large": convnext_large,
    "convnext_xlarge": convnext_xlarge,
    "convnextv2_atto": convnextv2_atto,
    "convnextv2_femto": convnextv2_femto,
    "convnextv2_pico": convnextv2_pico,
    "convnextv2_nano": convnextv2_nano,
    "convnextv2_tiny": convnextv2_tiny,
    "convnextv2_base": convnextv2_base,
    "convnextv2_large": convnextv2_large,
    "convnextv2_huge": convnextv2_huge,
}


def create_model(name: str, **kwargs) -> ConvNeXt:
    """Build a model by name, e.g. ``create_model("convnextv2_atto", num_classes=5, pretrained=False)``."""
    _check_known(name)
    return MODELS[name](**kwargs)


def model_family(name: str) -> str:
    """'v1' or 'v2' for a name in :data:`MODELS`."""
    _check_known(name)
    return "v2" if name.startswith(ConvNeXtV2.ARCH + "_") else "v1"


def _check_known(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
