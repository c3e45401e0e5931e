"""The ``--heatmaps N`` cases of an external validation: the N most confident correct and the N most confident
wrong predictions, each as the image with its Grad-CAM map (shared/heatmaps.py), plus the model's own spatial
attention where it has one (convnext_cxr), or three orthogonal slices through the map's peak for a 3D model."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .heatmaps import gradcam, overlay, peak_index
from .plots import _save, plt


def pick_cases(task: str, targets: np.ndarray, probs: np.ndarray, n: int) -> list[tuple[int, int, bool]]:
    """(sample, class, correct) of the ``n`` most confident correct and ``n`` most confident wrong predictions.
    A sample's prediction is its highest-probability class (for multi-label, correct when that finding is
    present)."""
    predicted = probs.argmax(1)
    confidence = probs[np.arange(len(probs)), predicted]
    correct = (targets[np.arange(len(probs)), predicted] > 0.5) if task == "multi-label" else predicted == targets
    cases = []
    for want in (True, False):
        chosen = [i for i in np.argsort(-confidence, kind="stable") if correct[i] == want][:n]
        cases += [(int(i), int(predicted[i]), want) for i in chosen]
    return cases


def _attention(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray | None:
    """The model's own spatial attention (a forward that takes ``return_attention``), upsampled to the input."""
    if "return_attention" not in inspect.signature(model.forward).parameters:
        return None
    with torch.no_grad():
        spatial = model(inputs, return_attention=True)["spatial_attention"].float()
    spatial = torch.nn.functional.interpolate(spatial, size=inputs.shape[2:], mode="bilinear", align_corners=False)
    return spatial[0, 0].numpy()


def _display(inputs: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The model input back in [0, 1], (H, W, C) or (D, H, W) for the first channel of a volume."""
    x = inputs[0].float()
    if x.dim() == 4:  # (C, D, H, W)
        volume = x[0].numpy()
        return (volume - volume.min()) / max(float(volume.max() - volume.min()), 1e-8)
    x = x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def case_figure(model: torch.nn.Module, inputs: torch.Tensor, cls: int, preprocessing: dict,
                select_logits: Callable, title: str | None = None):
    """A figure of ``inputs`` (1, C, ...) with the Grad-CAM map of class ``cls``: three orthogonal slices through
    the map's peak for a volume; for an image, the map and the model's own spatial attention if it has one."""
    cam = gradcam(model, inputs, [cls], select_logits=select_logits)[0]
    image = _display(inputs, preprocessing["mean"], preprocessing["std"])
    if cam.ndim == 3:  # 3D: slices through the map's peak
        x, y, z = peak_index(cam)
        views = [("sagittal", image[x], cam[x]), ("coronal", image[:, y], cam[:, y]), ("axial", image[:, :, z], cam[:, :, z])]
    else:
        views = [("Grad-CAM", image, cam)]
        attention = _attention(model, inputs)
        if attention is not None:
            views.append(("spatial attention", image, (attention - attention.min()) / max(np.ptp(attention), 1e-8)))
    fig, axes = plt.subplots(1, len(views), figsize=(3.2 * len(views), 3.4), squeeze=False)
    for ax, (name, picture, heat) in zip(axes[0], views):
        ax.imshow(overlay(picture, heat))
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    return fig


def save_case_figures(model: torch.nn.Module, read: Callable[[Path], torch.Tensor], paths: Sequence[Path],
                      cases: Sequence[tuple[int, int, bool]], class_names: Sequence[str],
                      preprocessing: dict, select_logits: Callable, out_dir: Path) -> list[Path]:
    """One PNG per case in ``out_dir``; returns their paths."""
    files = []
    for rank, (index, cls, correct) in enumerate(cases):
        title = f"{Path(paths[index]).name}: {class_names[cls]} ({'correct' if correct else 'wrong'})"
        fig = case_figure(model, read(paths[index])[None], cls, preprocessing, select_logits, title)
        files.append(_save(fig, out_dir / f"{'correct' if correct else 'wrong'}_{rank:02d}.png"))
    return files
