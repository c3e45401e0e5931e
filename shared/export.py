"""One exported model format for all five projects: ``export/model.safetensors`` + ``export/model.json``.

``model.json`` says everything needed to use the weights without the training run: the project, the
architecture config its builder takes, the class names, the task type (``multi-label``,
``multi-class`` or ``zero-shot``), the preprocessing (size, channels, mean/std, 2D or 3D) and the
validation-tuned thresholds. Weights are safetensors, so loading unpickles nothing.

Each project registers a builder (architecture dict -> ``nn.Module``) with :func:`register_model`;
``shared`` imports no project: :func:`load_export` imports the builder's module named in ``model.json``
when the project has not been imported yet.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from .checkpoint import CheckpointError, load_model_weights, strip_module_prefix
from .io import atomic_write, read_json, write_json

EXPORT_FORMAT = "medcls-export/1"
TASK_TYPES = ("multi-label", "multi-class", "zero-shot")

_BUILDERS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {}
_READERS: dict[str, Callable[[Mapping[str, Any]], Callable[[Path], torch.Tensor]]] = {}


@dataclass
class Preprocessing:
    """How an input becomes the model's tensor: resize to ``size``, ``channels``, then (x - mean) / std."""
    size: Sequence[int]  # (H, W) for 2D, (D, H, W) for 3D
    channels: int = 3
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    spatial_dims: int = 2
    extra: dict = field(default_factory=dict)  # project-specific steps, e.g. {"intensity": "zscore"}

    def __post_init__(self):
        if len(self.size) != self.spatial_dims:
            raise ValueError(f"preprocessing size {list(self.size)} does not have {self.spatial_dims} dimensions")


def register_model(project: str) -> Callable:
    """Decorator: ``@register_model("convnext_cxr") def build(architecture: dict) -> nn.Module``."""
    def decorator(builder: Callable[[Mapping[str, Any]], nn.Module]) -> Callable:
        _BUILDERS[project] = builder
        return builder
    return decorator


def register_input_reader(project: str) -> Callable:
    """Decorator for a project whose inputs the 2D rule of :class:`Preprocessing` does not describe (3D
    volumes): ``@register_input_reader("alzheimer_mosa") def reader(info: dict) -> (path -> input tensor)``,
    where ``info`` is the export's ``model.json``; registered in the module that registers its model."""
    def decorator(factory: Callable[[Mapping[str, Any]], Callable[[Path], torch.Tensor]]) -> Callable:
        _READERS[project] = factory
        return factory
    return decorator


def project_input_reader(info: Mapping[str, Any]) -> Callable[[Path], torch.Tensor] | None:
    """The reader the export's project registered (importing the project), or None."""
    _builder(info["project"], info.get("builder_module"))
    factory = _READERS.get(info["project"])
    return factory(info) if factory is not None else None


def _builder(project: str, module: str | None) -> Callable[[Mapping[str, Any]], nn.Module]:
    if project not in _BUILDERS and module:
        importlib.import_module(module)
    if project not in _BUILDERS:
        raise CheckpointError(f"no model builder registered for project {project!r} "
                              f"(known: {sorted(_BUILDERS)}); import the project before loading its export")
    return _BUILDERS[project]


def export_model(model: nn.Module, out_dir: str | Path, *, project: str, architecture: Mapping[str, Any],
                 class_names: Sequence[str], task: str, preprocessing: Preprocessing,
                 thresholds: Sequence[float] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``out_dir`` (atomically); returns ``out_dir``."""
    if task not in TASK_TYPES:
        raise ValueError(f"task must be one of {TASK_TYPES}, got {task!r}")
    builder = _builder(project, None)
    out_dir = Path(out_dir)
    weights = {k: v.detach().cpu().contiguous() for k, v in strip_module_prefix(model.state_dict()).items()}
    atomic_write(out_dir / "model.safetensors", lambda tmp: save_file(weights, tmp))
    write_json(out_dir / "model.json", {
        "format": EXPORT_FORMAT, "project": project, "builder_module": builder.__module__,
        "architecture": dict(architecture), "class_names": list(class_names), "task": task,
        "preprocessing": asdict(preprocessing), "thresholds": None if thresholds is None else list(thresholds),
        "extra": dict(extra or {}),
    })
    return out_dir


def read_export_info(export_dir: str | Path) -> dict:
    """``model.json`` of an export, checked for its format."""
    info = read_json(Path(export_dir) / "model.json", what="export description", error=CheckpointError)
    if info.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{export_dir}/model.json is not a {EXPORT_FORMAT} export (format: {info.get('format')!r})")
    return info


def export_thresholds(info: Mapping[str, Any]) -> list[float]:
    """The decision threshold of each class: the export's validation-tuned ones, or 0.5 each where it has none."""
    return [float(t) for t in (info.get("thresholds") or [0.5] * len(info["class_names"]))]


def load_export(export_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of any project's export (eval mode, on ``device``) and return it with ``model.json``."""
    export_dir = Path(export_dir)
    info = read_export_info(export_dir)
    model = _builder(info["project"], info.get("builder_module"))(info["architecture"])
    weights_path = export_dir / "model.safetensors"
    if not weights_path.is_file():
        raise CheckpointError(f"export weights not found: {weights_path}")
    load_model_weights(model, load_file(str(weights_path)), source=str(weights_path))
    return model.to(device).eval(), info
