"""The engine's data loaders: the global batch split per device, seeded shuffling or weighted sampling,
and image batches in channels_last layout."""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from .data import single_threaded_worker
from .train_config import TrainConfig


def per_device_batch(global_batch: int, divisor: int) -> int:
    """``global_batch // divisor`` (processes x accumulation steps), with a warning when it does not divide."""
    if global_batch % divisor:
        warnings.warn(f"global batch {global_batch} is not divisible by {divisor} "
                      f"(processes x accumulation); using {max(1, global_batch // divisor)} per device")
    return max(1, global_batch // divisor)


def make_loader(dataset: Dataset, cfg: TrainConfig, batch: int, accelerator: Accelerator, *, train: bool,
                collate_fn=None, sample_weights: Sequence[float] | None = None) -> DataLoader:
    """A loader of ``batch`` samples per step: seeded shuffling (or weighted sampling with replacement) and
    dropped incomplete last batches for training, the whole dataset in order for evaluation."""
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler = None
    if train and sample_weights is not None:
        sampler = WeightedRandomSampler(torch.as_tensor(sample_weights, dtype=torch.double),
                                        num_samples=len(dataset), replacement=True, generator=generator)
    return DataLoader(
        dataset, batch_size=batch, shuffle=train and sampler is None, sampler=sampler,
        generator=generator if train else None, num_workers=cfg.num_workers, collate_fn=collate_fn,
        pin_memory=accelerator.device.type == "cuda", persistent_workers=cfg.num_workers > 0,
        worker_init_fn=single_threaded_worker,
        drop_last=train and len(dataset) >= batch * accelerator.num_processes * 2,
    )


def channels_last_batch(batch: Any) -> Any:
    """Floating 4-D (5-D) tensors, also inside dicts, lists and tuples, in channels_last(_3d) layout."""
    if isinstance(batch, torch.Tensor):
        if batch.is_floating_point() and batch.ndim == 4:
            return batch.contiguous(memory_format=torch.channels_last)
        if batch.is_floating_point() and batch.ndim == 5:
            return batch.contiguous(memory_format=torch.channels_last_3d)
        return batch
    if isinstance(batch, Mapping):
        return type(batch)({k: channels_last_batch(v) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        return type(batch)(channels_last_batch(v) for v in batch)
    return batch
