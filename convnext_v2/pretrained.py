"""Loading official and timm ConvNeXt weights into our models.

Our parameter names are those of the official code (facebookresearch/ConvNeXt and ConvNeXt-V2),
so official checkpoints load as they are. timm renames and, for some sizes, reshapes them;
:func:`timm_to_official` undoes that (it is the inverse of timm's ``convnext.checkpoint_filter_fn``):

    timm key                                 our / official key                  shape change
    stem.0.*                                 downsample_layers.0.0.*             (4x4 patchify conv)
    stem.1.*                                 downsample_layers.0.1.*             (its LayerNorm)
    stages.{i}.downsample.{k}.*              downsample_layers.{i}.{k}.*         (LayerNorm, 2x2 conv)
    stages.{i}.blocks.{j}.conv_dw.*          stages.{i}.{j}.dwconv.*
    stages.{i}.blocks.{j}.norm.*             stages.{i}.{j}.norm.*
    stages.{i}.blocks.{j}.mlp.fc1.*          stages.{i}.{j}.pwconv1.*            1x1 conv (O, I, 1, 1) -> (O, I)
    stages.{i}.blocks.{j}.mlp.fc2.*          stages.{i}.{j}.pwconv2.*            1x1 conv (O, I, 1, 1) -> (O, I)
    stages.{i}.blocks.{j}.gamma              stages.{i}.{j}.gamma                (V1 LayerScale)
    stages.{i}.blocks.{j}.mlp.grn.weight     stages.{i}.{j}.grn.gamma            (C,) -> (1, 1, 1, C)
    stages.{i}.blocks.{j}.mlp.grn.bias       stages.{i}.{j}.grn.beta             (C,) -> (1, 1, 1, C)
    head.norm.*                              norm.*
    head.fc.*                                head.*

(timm builds the small V2 sizes, atto to nano, with 1x1 convolutions instead of Linear layers in
the MLP; hence the reshapes.)
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

HEAD_KEYS = ("head.weight", "head.bias")

# (timm pattern, official replacement), applied in order to every key.
_TIMM_TO_OFFICIAL = [
    (r"^stem\.", "downsample_layers.0."),
    (r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
    (r"\.conv_dw\.", ".dwconv."),
    (r"\.mlp\.fc(\d)\.", r".pwconv\1."),
    (r"\.mlp\.grn\.weight$", ".grn.gamma"),
    (r"\.mlp\.grn\.bias$", ".grn.beta"),
    (r"^head\.norm\.", "norm."),
    (r"^head\.fc\.", "head."),
]


def is_timm_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    return "stem.0.weight" in state_dict


def timm_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and reshape) a timm ConvNeXt / ConvNeXt V2 state dict to the official layout."""
    converted = {}
    for key, value in state_dict.items():
        for pattern, replacement in _TIMM_TO_OFFICIAL:
            key = re.sub(pattern, replacement, key)
        if key.endswith((".grn.gamma", ".grn.beta")):
            value = value.reshape(1, 1, 1, -1)  # (C,) -> (1, 1, 1, C)
        elif re.search(r"\.pwconv\d\.weight$", key):
            value = value.reshape(value.shape[0], -1)  # (O, I, 1, 1) or (O, I) -> (O, I)
        converted[key] = value
    return converted


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a model state dict from a ``.safetensors`` or ``.pth`` file, unwrapping training checkpoints."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # Official checkpoints keep the weights under "model"; other trainers use "state_dict".
    for key in ("model", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def download_timm_state_dict(hub_name: str) -> dict[str, torch.Tensor]:
    """The weights of a timm model from the Hugging Face hub (needs network access or a warm cache)."""
    import timm

    try:
        return timm.create_model(hub_name, pretrained=True).state_dict()
    except Exception as error:  # network errors come in many types
        raise RuntimeError(
            f"could not download the pretrained weights {hub_name!r} ({error}); "
            "pass pretrained=<path to an official or timm checkpoint> to load a local file"
        ) from error


def load_pretrained(model: nn.Module, source: bool | str | os.PathLike, hub_name: str) -> None:
    """Load official or timm weights into ``model``.

    ``source`` is True (download ``hub_name`` from the timm hub) or a local file. When the
    checkpoint's classifier has a different number of classes, the classifier keeps its fresh
    initialisation (transfer learning); every other parameter must match exactly.
    """
    state_dict = download_timm_state_dict(hub_name) if source is True else read_state_dict(source)
    if is_timm_layout(state_dict):
        state_dict = timm_to_official(state_dict)

    own_state = model.state_dict()
    if all(k in state_dict for k in HEAD_KEYS) and state_dict["head.weight"].shape != own_state["head.weight"].shape:
        logger.info(
            "pretrained classifier has %d classes, the model %d: keeping a freshly initialised head",
            state_dict["head.weight"].shape[0],
            own_state["head.weight"].shape[0],
        )
        state_dict = {k: v for k, v in state_dict.items() if k not in HEAD_KEYS}

    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if k not in HEAD_KEYS]
    if missing or unexpected:
        raise ValueError(
            f"pretrained weights {source if source is not True else hub_name!r} do not fit "
            f"{type(model).__name__}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
