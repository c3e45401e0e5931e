"""Both model families in one place, a name -> constructor table (names as in timm), and the builder
that rebuilds a model from its export (``architecture`` dict -> model, registered with ``shared``)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

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

from shared import register_model

__all__ = ["GRN", "MODELS", "ConvNeXt", "ConvNeXtV2", "architecture", "build_from_architecture", "create_model",
           "model_family"]

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


def architecture(model: ConvNeXt) -> dict[str, Any]:
    """Everything :func:`build_from_architecture` needs to rebuild ``model`` for inference (the export's
    ``architecture``): family, input channels, classes, depths and widths (and V1's LayerScale start,
    which decides whether the block has a ``gamma``); ``model_name`` is the matching named size, if any."""
    family = "v2" if isinstance(model, ConvNeXtV2) else "v1"
    depths = [len(stage) for stage in model.stages]
    dims = [layers[0 if i == 0 else 1].out_channels for i, layers in enumerate(model.downsample_layers)]
    cls = ConvNeXtV2 if family == "v2" else ConvNeXt
    sizes = [size for size, spec in cls.SIZES.items() if list(spec.depths) == depths and list(spec.dims) == dims]
    arch = {"family": family, "model_name": f"{cls.ARCH}_{sizes[0]}" if sizes else None,
            "in_chans": model.downsample_layers[0][0].in_channels, "num_classes": model.num_classes,
            "depths": depths, "dims": dims}
    if family == "v1":
        arch["layer_scale_init_value"] = model.layer_scale_init_value
    return arch


@register_model("convnext_v2")
def build_from_architecture(arch: Mapping[str, Any]) -> ConvNeXt:
    """A freshly initialised ConvNeXt (``family`` v1) or ConvNeXt V2 (v2) of the given shape."""
    if arch.get("family") not in ("v1", "v2"):
        raise ValueError(f"architecture family must be 'v1' or 'v2', got {arch.get('family')!r}")
    kwargs = dict(in_chans=arch["in_chans"], num_classes=arch["num_classes"], depths=tuple(arch["depths"]),
                  dims=tuple(arch["dims"]))
    if arch["family"] == "v1":
        return ConvNeXt(layer_scale_init_value=arch.get("layer_scale_init_value", 1e-6), **kwargs)
    return ConvNeXtV2(**kwargs)
