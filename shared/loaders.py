"""The engine's data loaders: the global batch split per device, seeded shuffling or weighted sampling,
per-sample seeded augmentation, and image batches in channels_last layout.

Reproducibility: every random draw a sample's ``__getitem__`` makes from Python's ``random``, NumPy's global
generator or torch's default (CPU) generator is a function of (seed, stream, epoch, position of the sample in
the epoch's order) and nothing else: not of the process or worker that loads it, the number of workers or
processes, or the batches a resumed run skips. The samplers yield keys ``(dataset index, sample seed)``
(:func:`sample_seeds`) and :class:`SeededSamples` seeds the three generators from the key before it loads
the sample. The training order is a function of (seed, epoch) (:class:`EpochSampler`). So ``num_workers``
0, 1 or 2 give identical batches, and a run resumed at an epoch boundary or mid-epoch (shared/preemption.py)
sees exactly the data of an uninterrupted run, without saving loader state. Loading in the main process
(``num_workers: 0``) restores the three generators afterwards, and no loader draws from the global torch
generator, so loading never shifts dropout or MixUp draws: with the main process's generators restored from
the checkpoint, the resumed run's weights equal the uninterrupted run's bit for bit, with any ``num_workers``.

Not covered: draws in a ``collate_fn`` (in a worker they continue the batch's last sample's generators, in
the main process they come from the run's), and generators a dataset keeps itself (an
``np.random.default_rng()`` made once continues across samples in whichever worker holds it)."""
from __future__ import annotations

import random
import signal
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .data import single_threaded_worker
from .train_config import TrainConfig


def per_device_batch(global_batch: int, divisor: int) -> int:
    """``global_batch // divisor`` (processes x accumulation steps), with a warning when it does not divide."""
    if global_batch % divisor:
        warnings.warn(f"global batch {global_batch} is not divisible by {divisor} "
                      f"(processes x accumulation); using {max(1, global_batch // divisor)} per device")
    return max(1, global_batch // divisor)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (NumPy ``SeedSequence``): independent streams for (seed, stream, epoch)
    and its variants, and none of the overlaps that ``seed + epoch`` would give."""
    return int(_sequence(*parts).generate_state(1, np.uint64)[0] >> 1)


def _sequence(*parts: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(p) % 2**64 for p in parts])


def sample_seeds(seed: int, stream: int, epoch: int, count: int) -> list[int]:
    """The 63-bit seeds of positions ``0 .. count - 1`` of an epoch's order: word ``p`` of a ``SeedSequence``
    keyed by (seed, stream, epoch), which depends on ``p`` alone (one vectorised call: 0.1 µs a position, where
    a :func:`derived_seed` per position took 10)."""
    return (_sequence(seed, stream, epoch, 1).generate_state(count, np.uint64) >> 1).tolist()


def seed_generators(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's default CPU generator from ``seed``: three
    different streams (Python seeds its MT19937 from the 32-bit words of ``seed``; NumPy gets one more word, or
    the two would draw the same numbers). ``torch.manual_seed`` would also reseed the CUDA generators, which
    dropout on the GPU draws from."""
    random.seed(seed)
    np.random.seed([seed & 0xFFFFFFFF, seed >> 32, 1])
    torch.default_generator.manual_seed(seed)


class SeededSamples(Dataset):
    """``dataset`` indexed by the samplers' keys ``(index, seed)``: the generators are seeded from the key's
    seed (:func:`seed_generators`) before ``dataset[index]`` runs, so a sample's random augmentation depends
    on its seed alone. In the main process (``num_workers: 0``) they are saved before a batch and restored
    after it, so loading does not move the run's own draws. A plain index loads without seeding (a probe
    through ``Subset``). Every other attribute (``sample_ids``, ``labels``, a ``set_epoch`` that Accelerate
    forwards) is the dataset's."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):  # only reached for names the wrapper itself lacks
        if name.startswith("__") or name == "dataset":  # unpickling (spawned workers) asks before __dict__ is set
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _load(self, key):
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        seed_generators(seed)
        return self.dataset[index]

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list:
        """A batch (the DataLoader's fetcher calls this): the main process saves its generators once a batch."""
        if get_worker_info() is not None:  # a worker's generators serve the loader alone
            return [self._load(key) for key in keys]
        saved = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
        try:
            return [self._load(key) for key in keys]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.default_generator.set_state(saved[2])


class SeededSampler(Sampler[tuple[int, int]]):
    """The dataset in order, as :class:`SeededSamples` keys whose seeds come from (seed, ``stream``, epoch 0):
    evaluation, where every pass loads the same samples. Stream 1 keeps them independent of training's."""

    def __init__(self, num_samples: int, seed: int, stream: int = 1):
        self.num_samples, self.seed, self.stream, self.epoch = num_samples, seed, stream, 0

    def __len__(self) -> int:
        return self.num_samples

    def order(self) -> list[int]:
        return list(range(self.num_samples))

    def __iter__(self):
        return zip(self.order(), sample_seeds(self.seed, self.stream, self.epoch, self.num_samples))


class EpochSampler(SeededSampler):
    """The training order: a permutation of the dataset, or ``len(dataset)`` draws with replacement by
    ``weights`` (a sample drawn twice gets two seeds: its positions differ), from (seed, epoch).

    Not a ``RandomSampler``, so Accelerate's seedable sampler does not replace it; Accelerate's ``set_epoch``
    calls its :meth:`set_epoch`. Every process draws the same order and takes its share of the keys."""

    def __init__(self, num_samples: int, seed: int, weights: Sequence[float] | None = None):
        super().__init__(num_samples, seed, stream=0)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.stream, self.epoch, 0))
        if self.weights is None:
            return torch.randperm(self.num_samples, generator=generator).tolist()
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


def make_loader(dataset: Dataset, cfg: TrainConfig, batch: int, accelerator: Accelerator, *, train: bool,
                collate_fn=None, sample_weights: Sequence[float] | None = None) -> DataLoader:
    """A loader of ``batch`` samples per step over :class:`SeededSamples`: for training, the
    :class:`EpochSampler` order (``set_epoch`` on the prepared loader moves it on) without an incomplete last
    batch; for evaluation, the whole dataset in order with the same seeds every pass.

    Workers are not persistent: they start afresh each pass, so nothing a dataset keeps in a worker carries
    into the next epoch (a resumed run could not repeat it). The loader's own ``generator`` only supplies the
    per-pass base seed of the workers' generators (which :class:`SeededSamples` replaces per sample); without
    it the DataLoader would draw that from the global torch generator and shift dropout after a resume."""
    sampler = EpochSampler(len(dataset), cfg.seed, sample_weights) if train else SeededSampler(len(dataset), cfg.seed)
    return DataLoader(
        SeededSamples(dataset), batch_size=batch, sampler=sampler, generator=torch.Generator(),
        num_workers=cfg.num_workers, collate_fn=collate_fn, pin_memory=accelerator.device.type == "cuda",
        worker_init_fn=init_worker, drop_last=train and drops_last_batch(len(dataset), batch * accelerator.num_processes),
    )


def drops_last_batch(samples: int, global_batch: int) -> bool:
    """Whether training drops its incomplete last batch: when there are two full batches or more (an epoch of
    one short batch is kept), and always when it would hold one sample per device (BatchNorm cannot train
    on one value per channel)."""
    return samples >= 2 * global_batch or (samples > global_batch and samples % global_batch == 1)


def init_worker(worker_id: int) -> None:
    """``worker_init_fn``: one SimpleITK thread (:func:`~shared.data.single_threaded_worker`), and the signals
    a job scheduler sends to the whole process group (Slurm's ``scancel``, Ctrl-C) left to the main process.
    A worker ignores SIGINT and outlives a first SIGTERM, so the main process can finish its step, save and
    shut the workers down (torch's own worker handler would die of it, and the main process would stop with
    "DataLoader worker ... killed by signal" and save nothing); a second SIGTERM, e.g. torch's fallback
    ``terminate()`` of a stuck worker, ends it."""
    single_threaded_worker(worker_id)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _outlive_first_sigterm)


def _outlive_first_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
