"""Grad-CAM heatmaps for the 2D models and the 3D alzheimer_mosa model, for external-validation reports.

Grad-CAM itself comes from the maintained ``grad-cam`` package (``pytorch_grad_cam``), which handles
both 4-D (N, C, H, W) and 5-D (N, C, D, H, W) activations. We require ``grad-cam>=1.5.7``: it is the
first release that depends on ``opencv-python-headless`` instead of ``opencv-python`` (whose
``import cv2`` needs ``libGL.so.1``, missing on minimal Linux machines); the headless wheel links
only libc/libstdc++/libz. This module adds what the library leaves to the caller:

* ``find_target_layer``: pick the last feature-map layer by a forward pass, for timm ConvNeXt,
  channels-last Swin (NHWC outputs get a ``reshape_transform``) and the repo's own models;
* ``gradcam``: models returning a tensor, a mapping with ``"logits"`` or a tuple (first item);
  restores the model's train/eval mode; works under ``torch.no_grad()`` and with frozen weights;
* ``peak_slices`` (three orthogonal planes through a 3D map's peak), ``overlay`` (matplotlib colour
  map, no OpenCV), ``mass_in_region`` (fraction of a heatmap's mass inside a mask).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DataError

__all__ = ["find_target_layer", "gradcam", "logits_of", "peak_slices", "peak_index", "overlay", "mass_in_region"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity)


def logits_of(output, num_classes: int | None = None) -> torch.Tensor:
    """The class logits of a model output: the tensor itself, ``output["logits"]``, or from a tuple the last
    element with ``num_classes`` logits (hybridmednet's hierarchical head returns (coarse, fine)); without
    ``num_classes``, its first element."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):  # also transformers' ModelOutput
        return output["logits"]
    if not isinstance(output, (tuple, list)):
        raise TypeError(f"cannot take logits from a model output of type {type(output).__name__}")
    if num_classes is None:
        return output[0]
    fitting = [t for t in output if isinstance(t, torch.Tensor) and t.shape[-1] == num_classes]
    if not fitting:
        raise DataError(f"the model's outputs have no tensor of {num_classes} logits (one per class)")
    return fitting[-1]


class _LogitsOnly(nn.Module):
    """Wraps a model so it returns its logits tensor, which is what pytorch_grad_cam expects."""

    def __init__(self, model: nn.Module, select_logits: Callable | None):
        super().__init__()
        self.model = model
        self.select_logits = select_logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.model(x)
        return self.select_logits(output) if self.select_logits is not None else logits_of(output)


def _layout(shape: Sequence[int], input_spatial: Sequence[int]) -> str:
    """'channels_first' or 'channels_last' for a feature map of ``shape`` made from an input whose
    spatial size is ``input_spatial``: the spatial axes are the ones that look like the input
    divided by one common stride. Ambiguous shapes count as channels-first (PyTorch's default)."""
    k = len(input_spatial)

    def plausible(dims: Sequence[int]) -> bool:
        if any(d < 1 or d > s for d, s in zip(dims, input_spatial)):
            return False
        strides = [s / d for d, s in zip(dims, input_spatial)]
        return max(strides) / min(strides) < 1.5

    if plausible(shape[2:2 + k]):
        return "channels_first"
    if plausible(shape[1:1 + k]):
        return "channels_last"
    return "channels_first"


def _spatial(shape: Sequence[int], layout: str) -> Sequence[int]:
    return shape[1:-1] if layout == "channels_last" else shape[2:]


def _probe(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, module, output) of every module whose output is a tensor, in the order they finish."""
    records: list[tuple[str, nn.Module, torch.Tensor]] = []
    handles = []
    for name, module in model.named_modules():
        def hook(mod, _inputs, output, name=name):
            if isinstance(output, torch.Tensor):
                records.append((name, mod, output))
        handles.append(module.register_forward_hook(hook))
    _forward_once(model, example, handles)
    return records


def _forward_once(model: nn.Module, example: torch.Tensor, handles: list) -> None:
    """One eval-mode forward without gradients for the hooks in ``handles``, removed afterwards; the model's
    train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def _find(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, str]:
    input_spatial = tuple(example.shape[2:])
    ndim = example.dim()
    records = _probe(model, example)
    for i in range(len(records) - 1, -1, -1):
        name, module, output = records[i]
        if name == "" or output.dim() != ndim:
            continue
        layout = _layout(tuple(output.shape), input_spatial)
        if int(np.prod(_spatial(tuple(output.shape), layout))) <= 1:
            continue
        # Containers and identities hand on their child's very tensor: of the modules that produced
        # this same tensor, take the outermost one that is not a bare container (e.g. stages[-1]).
        same = [(n, m) for n, m, o in records if o is output and n != ""]
        proper = [(n, m) for n, m in same if not isinstance(m, _CONTAINERS)] or same
        return proper[-1][1], layout
    raise ValueError(f"no module of {type(model).__name__} outputs a {ndim}-D feature map with spatial size > 1 "
                     f"for an input of shape {tuple(example.shape)}")


def find_target_layer(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """The last module whose output is a (N, C, H, W) / (N, C, D, H, W) feature map (or its
    channels-last form) with spatial size > 1, found by a forward pass on ``example``: a tensor
    shaped like the model's input (only its first item is used; default: one 3x224x224 image)."""
    if example is None:
        example = torch.zeros(1, 3, 224, 224)
    example = example[:1].to(_device(model))
    return _find(model, example)[0]


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _output_layout(model: nn.Module, layer: nn.Module, example: torch.Tensor) -> str:
    shapes = []
    _forward_once(model, example, [layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))])
    if not shapes:
        raise ValueError("target_layer was not called in the model's forward pass")
    return _layout(shapes[-1], tuple(example.shape[2:]))


def _to_channels_first(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, t.dim() - 1, *range(1, t.dim() - 1))


def gradcam(model: nn.Module, inputs: torch.Tensor, target_classes: Sequence[int] | int,
            target_layer: nn.Module | None = None, *, select_logits: Callable | None = None,
            batch_size: int = 16) -> np.ndarray:
    """Grad-CAM maps (N, H, W) for 2D inputs (N, C, H, W), or (N, D, H, W) for 3D inputs
    (N, C, D, H, W), each scaled to [0, 1] and upsampled to the input's spatial size.

    ``target_classes`` gives one class index per input (an int applies to all). The logits are the
    model's output if it is a tensor, else ``output["logits"]`` or ``output[0]``; pass
    ``select_logits`` to choose otherwise (e.g. ``lambda out: out.fine`` for a hierarchical head).
    ``target_layer`` defaults to ``find_target_layer(model, inputs)``. The model is run in eval mode
    and left in the mode it had; its parameters' ``.grad`` are cleared.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if inputs.dim() not in (4, 5):
        raise ValueError(f"inputs must be (N, C, H, W) or (N, C, D, H, W), got shape {tuple(inputs.shape)}")
    n = inputs.shape[0]
    classes = [int(target_classes)] * n if isinstance(target_classes, (int, np.integer)) else [int(c) for c in target_classes]
    if len(classes) != n:
        raise ValueError(f"{len(classes)} target classes for {n} inputs")
    device = _device(model)
    inputs = inputs.detach().to(device)
    if target_layer is None:
        target_layer, layout = _find(model, inputs[:1])
    else:
        layout = _output_layout(model, target_layer, inputs[:1])
    reshape = _to_channels_first if layout == "channels_last" else None
    spatial = tuple(inputs.shape[2:])

    was_training = model.training
    wrapped = _LogitsOnly(model, select_logits)
    maps = []
    try:
        with torch.enable_grad(), GradCAM(model=wrapped, target_layers=[target_layer], reshape_transform=reshape) as cam:
            for start in range(0, n, batch_size):
                # An input that requires grad keeps the graph alive even when the weights are frozen.
                chunk = inputs[start:start + batch_size].clone().requires_grad_(True)
                targets = [ClassifierOutputTarget(c) for c in classes[start:start + batch_size]]
                maps.append(np.asarray(cam(input_tensor=chunk, targets=targets), dtype=np.float32))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    result = np.concatenate(maps, axis=0)
    if result.shape[1:] != spatial:  # the library's 3D zoom rounds sizes; make the contract exact
        result = F.interpolate(torch.from_numpy(result)[:, None], size=spatial,
                               mode="trilinear" if len(spatial) == 3 else "bilinear", align_corners=False)[:, 0].numpy()
    return np.clip(np.nan_to_num(result), 0.0, 1.0).astype(np.float32)


def peak_slices(volume_map: np.ndarray,
                planes: Sequence[str] = ("sagittal", "coronal", "axial")) -> dict[str, np.ndarray]:
    """The three orthogonal 2-D slices of a 3D map through its argmax voxel.

    ``planes[i]`` names the plane of constant index along array axis ``i``. The default fits this
    repo's volumes, (X, Y, Z) in RAS+ axis order (alzheimer_mosa/augment.py): ``"sagittal"`` is
    ``volume_map[x]`` (Y, Z), ``"coronal"`` is ``volume_map[:, y]`` (X, Z), ``"axial"`` is
    ``volume_map[:, :, z]`` (X, Y). ``peak_index`` gives the voxel itself.
    """
    volume_map = np.asarray(volume_map)
    if volume_map.ndim != 3:
        raise ValueError(f"volume_map must be 3-D, got shape {volume_map.shape}")
    if sorted(planes) != ["axial", "coronal", "sagittal"]:
        raise ValueError(f"planes must name axial, coronal and sagittal once each, got {planes}")
    peak = peak_index(volume_map)
    return {plane: np.take(volume_map, peak[axis], axis=axis) for axis, plane in enumerate(planes)}


def peak_index(volume_map: np.ndarray) -> tuple[int, ...]:
    """Array index of the map's maximum (the first one on ties)."""
    volume_map = np.asarray(volume_map)
    return tuple(int(i) for i in np.unravel_index(int(np.nanargmax(volume_map)), volume_map.shape))


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """(H, W, 3) uint8 RGB: ``image`` (H, W), (H, W, 1|3) or (3, H, W), any range (min-max scaled
    to [0, 1] unless uint8), blended with ``heatmap`` (H, W, values in [0, 1]) through a matplotlib
    colour map; ``alpha`` is the heatmap's weight."""
    from matplotlib import colormaps

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be grayscale or RGB, got shape {image.shape}")
    if image.dtype == np.uint8:
        base = image.astype(np.float32) / 255.0
    else:
        base = image.astype(np.float32)
        lo, hi = np.nanmin(base), np.nanmax(base)
        base = (base - lo) / (hi - lo) if hi > lo else np.zeros_like(base)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != base.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} differs from the image's {base.shape[:2]}")
    colours = colormaps[cmap](np.clip(np.nan_to_num(heatmap), 0.0, 1.0))[..., :3].astype(np.float32)
    blended = (1.0 - alpha) * base + alpha * colours
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)


def mass_in_region(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the (non-negative) heatmap's total mass inside the boolean ``mask`` (same shape);
    0.0 for an all-zero heatmap. A uniform map scores the mask's share of the pixels."""
    heatmap = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0.0, None)
    mask = np.asarray(mask, dtype=bool)
    if heatmap.shape != mask.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} differs from mask shape {mask.shape}")
    total = heatmap.sum()
    return float(heatmap[mask].sum() / total) if total > 0 else 0.0
