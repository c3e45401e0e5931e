"""Checkpoints that survive a crash mid-write and load without unpickling arbitrary code.

Files are written to a temporary name in the same folder and moved into place with ``os.replace``
(atomic on POSIX), so a killed run leaves either the previous checkpoint or the new one, never half
of one. Loading always uses ``weights_only=True``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .io import atomic_write as _atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Atomically ``torch.save`` a dict of tensors and plain Python values."""
    path = Path(path)
    _atomic_write(path, lambda tmp: torch.save(dict(state), tmp))
    return path


def _load_failure_reason(path: Path, err: Exception) -> str:
    """One line saying why torch.load failed (its own messages run over many lines)."""
    if path.stat().st_size == 0:
        return "the file is empty"
    with open(path, "rb") as file:
        zip_start = file.read(4) == b"PK\x03\x04"  # torch.save's format is a zip archive
    if zip_start and not zipfile.is_zipfile(path):
        return "the file is truncated (its zip archive has no end); was its copy or write interrupted?"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:  # a foreign pickle, or not a pickle at all (e.g. a text file)
            detail = " ".join([line.split("WeightsUnpickler error:", 1)[-1].strip(), *lines[i + 1:i + 2]]).strip()
            return f"not a PyTorch checkpoint of tensors and plain values ({detail})"
    return lines[0] if lines else type(err).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True``; a one-line error if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_failure_reason(path, err)}") from err


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes some tools leave behind."""
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def load_model_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load weights, explaining a mismatch by missing, unexpected and mis-shaped keys."""
    state_dict = strip_module_prefix(state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong_shape = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in sorted(set(own) & set(state_dict)) if own[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong_shape:
        def head(items):
            return f"{items[:5]}{' ...' if len(items) > 5 else ''} ({len(items)})"
        problems = []
        if missing:
            problems.append(f"missing keys {head(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {head(unexpected)}")
        if wrong_shape:
            problems.append(f"shape mismatches {head(wrong_shape)}")
        raise CheckpointError(f"{source} does not match the model ({type(model).__name__}): " + "; ".join(problems))
    model.load_state_dict(state_dict)
