"""The engine's data loaders: the global batch split per device, seeded shuffling or weighted sampling,
and image batches in channels_last layout.

Reproducibility: everything random in a training epoch's data (the sample order and, in every loader worker,
the Python, NumPy and torch generators that augmentations draw from) is derived from ``(seed, epoch)`` by
:class:`EpochSeeding`, and workers are started afresh each epoch with those seeds. So the same seed gives
the same batches, and a run resumed at an epoch boundary sees the same data as an uninterrupted one, with
any ``num_workers`` and without saving loader state. (With ``num_workers: 0`` augmentations draw from the
main process's generators, which the checkpoint saves and restores.) No loader draws from the global torch
generator, so loading never shifts dropout or MixUp draws between an uninterrupted and a resumed run."""
from __future__ import annotations

import random
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, Sampler

from .data import single_threaded_worker
from .train_config import TrainConfig


def per_device_batch(global_batch: int, divisor: int) -> int:
    """``global_batch // divisor`` (processes x accumulation steps), with a warning when it does not divide."""
    if global_batch % divisor:
        warnings.warn(f"global batch {global_batch} is not divisible by {divisor} "
                      f"(processes x accumulation); using {max(1, global_batch // divisor)} per device")
    return max(1, global_batch // divisor)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (NumPy ``SeedSequence``): independent streams for (seed, epoch) and
    (seed, epoch, process, worker), and none of the overlaps that ``seed + epoch`` would give."""
    return int(np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class EpochSeeding:
    """The training loader's seeds, all functions of ``(seed, epoch)``: :meth:`set_epoch` re-seeds
    :attr:`generator` (the DataLoader's base seed), :class:`EpochSampler` reads :attr:`epoch`, and as
    ``worker_init_fn`` it seeds each worker's Python, NumPy and torch generators from
    (seed, epoch, process, worker id). ``stream`` 1 (evaluation loaders) gives seeds independent of training's."""

    def __init__(self, seed: int, process_index: int = 0, stream: int = 0):
        self.seed, self.process_index, self.stream, self.epoch = seed, process_index, stream, 0
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.generator.manual_seed(derived_seed(self.seed, self.stream, self.epoch))

    def worker_seed(self, worker_id: int) -> int:
        return derived_seed(self.seed, self.stream, self.epoch, self.process_index, worker_id + 1)

    def __call__(self, worker_id: int) -> None:
        single_threaded_worker(worker_id)
        seed = self.worker_seed(worker_id)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def __getstate__(self) -> dict:  # a spawned worker needs the numbers, not the sampler's generator
        return {k: v for k, v in self.__dict__.items() if k != "generator"}


class EpochSampler(Sampler[int]):
    """The training order: a permutation of the dataset, or ``len(dataset)`` draws with replacement by
    ``weights``, from a generator seeded with (seed, epoch) when iteration starts.

    Not a ``RandomSampler``, so Accelerate's seedable sampler does not replace it; its ``set_epoch`` (which
    Accelerate's ``set_epoch`` calls) also moves the workers' seeds on. Every process draws the same order."""

    def __init__(self, num_samples: int, seeding: EpochSeeding, weights: Sequence[float] | None = None):
        self.num_samples, self.seeding = num_samples, seeding
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        seeding = self.seeding
        generator = torch.Generator().manual_seed(derived_seed(seeding.seed, seeding.stream, seeding.epoch, 0))
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        yield from order.tolist()

    def set_epoch(self, epoch: int) -> None:
        self.seeding.set_epoch(epoch)


def make_loader(dataset: Dataset, cfg: TrainConfig, batch: int, accelerator: Accelerator, *, train: bool,
                collate_fn=None, sample_weights: Sequence[float] | None = None) -> DataLoader:
    """A loader of ``batch`` samples per step: shuffling (or weighted sampling with replacement) and worker
    seeds derived from (seed, epoch) (:class:`EpochSeeding`; ``set_epoch`` on the prepared loader moves them on)
    and dropped incomplete last batches for training, the whole dataset in order for evaluation.

    Workers are not persistent: they start again each pass, seeded for that epoch (persistent workers would
    carry their generators over from the previous epoch, which a resumed run cannot repeat); evaluation
    workers get the same seeds every pass. Neither loader draws from the global torch generator (a DataLoader
    without ``generator`` does, for its base seed, and so would shift dropout and the like after a resume)."""
    if not train:
        seeding = EpochSeeding(cfg.seed, accelerator.process_index, stream=1)
        return DataLoader(dataset, batch_size=batch, shuffle=False, generator=seeding.generator,
                          num_workers=cfg.num_workers, collate_fn=collate_fn,
                          pin_memory=accelerator.device.type == "cuda", worker_init_fn=seeding)
    seeding = EpochSeeding(cfg.seed, accelerator.process_index)
    sampler = EpochSampler(len(dataset), seeding, sample_weights)
    return DataLoader(
        dataset, batch_size=batch, sampler=sampler, generator=seeding.generator, num_workers=cfg.num_workers,
        collate_fn=collate_fn, pin_memory=accelerator.device.type == "cuda", persistent_workers=False,
        worker_init_fn=seeding, drop_last=len(dataset) >= batch * accelerator.num_processes * 2,
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
