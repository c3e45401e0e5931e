"""Device, distributed state and mixed precision: what the engine asks Accelerate for.

:func:`resolve_mixed_precision` is the one precision rule of all five projects.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import ProjectConfiguration

from .config import ConfigError
from .train_config import MIXED_PRECISION_CHOICES, TrainConfig, validate_train_config


def _use_cpu(force_cpu: bool) -> bool:
    return force_cpu or not torch.cuda.is_available()


def process_state(force_cpu: bool = False) -> PartialState:
    """The distributed state. On a machine without CUDA, ask for CPU explicitly: Accelerate only then
    turns a multi-process launch (torchrun / accelerate launch) into gloo DDP instead of N lone runs."""
    return PartialState(cpu=_use_cpu(force_cpu))


def _cuda_bf16() -> bool:
    """Whether the GPU computes in bf16 natively (emulated bf16 on pre-Ampere GPUs is slow)."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.5 has no including_emulation and reports native support only
        return torch.cuda.is_bf16_supported()


def resolve_mixed_precision(value: str | bool, cpu: bool = False) -> str:
    """``train.mixed_precision`` -> the precision Accelerate runs with (``cpu``: ``TrainConfig.cpu``).

    ``auto``: bf16 on a CUDA GPU with bf16, fp16 (with loss scaling) on one without, fp32 on the CPU
    (CPU bf16 autocast is slow without AMX and gave NaN gradients in a 3D conv backward on torch 2.14).
    ``fp16`` on the CPU warns and runs bf16 autocast (fp16 needs a CUDA GPU). ``bf16``/``no`` as given.
    ``true``/``false`` (the guides' ``mixed_precision: True``, and YAML's unquoted ``no``) mean auto/no.
    """
    if isinstance(value, bool):
        value = "auto" if value else "no"
    if value not in MIXED_PRECISION_CHOICES:
        raise ConfigError(f"train.mixed_precision: {value!r} is not one of {', '.join(MIXED_PRECISION_CHOICES)}")
    on_cpu = _use_cpu(cpu)
    if value == "auto":
        return "no" if on_cpu else "bf16" if _cuda_bf16() else "fp16"
    if value == "fp16" and on_cpu:
        warnings.warn("fp16 needs a CUDA GPU; using bf16 autocast on this CPU instead", RuntimeWarning)
        return "bf16"
    return value


def make_accelerator(cfg: TrainConfig, project_dir: Path, log_dir: Path) -> Accelerator:
    """A fresh Accelerator for one engine, with the precision of :func:`resolve_mixed_precision`, once the
    settings passed :func:`~shared.train_config.validate_train_config`."""
    validate_train_config(cfg)
    precision = resolve_mixed_precision(cfg.mixed_precision, cfg.cpu)
    # Several engines may run in one process (k-fold CV, tests); forget the previous one's
    # precision/accumulation settings but keep the distributed process group.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    process_state(cfg.cpu)
    return Accelerator(
        cpu=_use_cpu(cfg.cpu),
        mixed_precision=precision,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_config=ProjectConfiguration(project_dir=str(project_dir), logging_dir=str(log_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.find_unused_parameters)],
        dynamo_backend="inductor" if cfg.compile else "no",
        step_scheduler_with_optimizer=False,
    )
