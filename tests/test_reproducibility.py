"""Nothing random escapes the seed: the training order comes from (seed, epoch) and every sample's augmentation
draws from (seed, epoch, position in the order), so num_workers 0, 1 and 2 give identical batches and identical
runs, and a run resumed at an epoch boundary or mid-epoch ends with exactly the uninterrupted run's weights,
with loader workers, a random augmentation drawing from Python, NumPy and torch, and dropout; and resuming
with more epochs continues the schedule."""
import pickle
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from accelerate import skip_first_batches
from torch.utils.data import Dataset, Subset

from shared import Callback, EarlyStoppingConfig, Engine, MultiLabelTask, TrainConfig
from shared.loaders import EpochSampler, SeededSampler, SeededSamples, derived_seed, make_loader, sample_seeds
from shared.losses import AsymmetricLoss


class NoisyToyData(Dataset):
    """Toy multi-label data whose ``__getitem__`` adds noise from torch, NumPy and Python's ``random``, like a
    random augmentation: the result depends on the generators of whichever process (main or worker) loads it."""

    def __init__(self, n=96, seed=0):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(6, 3, generator=torch.Generator().manual_seed(99))
        self.x = torch.randn(n, 6, generator=g)
        self.y = ((self.x @ w) > 0).float()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        noise = torch.rand(6) + torch.from_numpy(np.random.rand(6)).float() + random.random()
        return self.x[i] + 0.2 * noise, self.y[i]


def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Dropout(0.3), nn.Linear(32, 3))


def make_cfg(path, **overrides):
    base = dict(output_dir=str(path), epochs=3, batch_size=16, num_workers=2, lr=5e-3, warmup_epochs=0.5,
                mixed_precision="no", progress_bar=False, log_every=4, ema_decay=0.9, tracker="none",
                early_stopping=EarlyStoppingConfig(monitor="val/macro_auroc", mode="max"))
    base.update(overrides)
    return TrainConfig(**base)


def task():
    return MultiLabelTask(AsymmetricLoss(), ["a", "b", "c"])


class KillAfterFirstEpoch(Callback):
    def on_epoch_end(self, engine, epoch, metrics):
        raise KeyboardInterrupt  # as if the job were killed right after the epoch-1 checkpoint


class KillAtStep(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, engine, batch, outputs):
        if engine.global_step == self.step:
            raise KeyboardInterrupt  # killed mid-epoch; save_every_steps=1 saved the step before


def test_sample_keys_are_functions_of_seed_epoch_and_position():
    sampler = EpochSampler(20, 7)
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(20)) and len({s for _, s in first}) == 20
    assert [s for _, s in first] == sample_seeds(7, 0, 0, 20)  # the seed follows the position, not the index
    assert sample_seeds(7, 0, 0, 5) == sample_seeds(7, 0, 0, 20)[:5]
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for i, _ in second] != [i for i, _ in first] and not {s for _, s in first} & {s for _, s in second}
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert [i for i, _ in EpochSampler(20, 8)] != [i for i, _ in first]  # the seed reaches the order
    assert derived_seed(7, 1) != derived_seed(8, 0)  # not seed + epoch
    weighted = list(EpochSampler(20, 7, weights=[0.0] * 18 + [1.0] * 2))
    assert {i for i, _ in weighted} == {18, 19} and len({s for _, s in weighted}) == 20  # repeats: new seeds
    evaluation = list(SeededSampler(20, 7))
    assert [i for i, _ in evaluation] == list(range(20)) and not hasattr(SeededSampler(20, 7), "set_epoch")
    assert not {s for _, s in evaluation} & {s for _, s in first}  # stream 1: not training's seeds


def loader_batches(workers, *, train=True, epoch=0, skip=0, seed=42):
    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=1)
    loader = make_loader(NoisyToyData(40), TrainConfig(num_workers=workers, seed=seed), 8, accelerator, train=train)
    if train:
        loader.sampler.set_epoch(epoch)
    return list(skip_first_batches(loader, skip) if skip else loader)


def same_batches(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))


def test_num_workers_0_1_2_give_identical_batches_and_skipped_batches_leave_the_rest_unchanged():
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = torch.rand(()), np.random.rand(), random.random()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    batches = loader_batches(0)  # in the main process: its generators are restored after each batch
    assert (torch.rand(()), np.random.rand(), random.random()) == expected
    assert len(batches) == 5
    for workers in (1, 2):
        assert same_batches(loader_batches(workers), batches)
        assert same_batches(loader_batches(workers, train=False), loader_batches(0, train=False))
    assert same_batches(loader_batches(2, skip=3), batches[3:])  # a mid-epoch resume's batches
    assert same_batches(loader_batches(2, epoch=1), loader_batches(0, epoch=1))
    assert not same_batches(loader_batches(0, epoch=1), batches)
    assert not same_batches(loader_batches(0, seed=43), batches)
    plain = NoisyToyData(40)
    order = [i for i, _ in EpochSampler(40, 42)]
    noise = torch.cat([x for x, _ in batches]) - plain.x[order]
    assert torch.equal(torch.cat([y for _, y in batches]), plain.y[order])  # the sampler's order
    assert noise.min() > 0 and noise.max() < 0.6 and noise.std() > 0.05  # and the noise is there


def test_the_seeded_dataset_passes_on_attributes_plain_indices_and_pickles():
    data = NoisyToyData(10)
    data.sample_ids = [f"s{i}.png" for i in range(10)]  # what evaluation reads
    seeded = SeededSamples(data)
    assert len(seeded) == 10 and seeded.sample_ids == data.sample_ids and seeded.dataset is data
    assert torch.equal(Subset(seeded, [3])[0][1], data.y[3])  # a probe through Subset uses plain indices
    key = (4, sample_seeds(1, 0, 0, 1)[0])
    assert torch.equal(pickle.loads(pickle.dumps(seeded))[key][0], seeded[key][0])  # spawned workers unpickle it


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted 3-epoch run's model, EMA and history, for num_workers 0 and 2."""
    runs = {}
    for workers in (0, 2):
        engine = Engine(make_cfg(tmp_path_factory.mktemp(f"full{workers}"), num_workers=workers), toy_model(), task(),
                        NoisyToyData(96), NoisyToyData(32, seed=1))
        engine.fit()
        engine.close()
        runs[workers] = engine
    return runs


def assert_same_weights(a, b):
    for x, y in zip([*a.model.parameters(), *a.ema.module.parameters()],
                    [*b.model.parameters(), *b.ema.module.parameters()]):
        assert torch.equal(x, y)


def test_runs_with_0_and_2_workers_end_with_the_same_weights(uninterrupted):
    assert_same_weights(uninterrupted[0], uninterrupted[2])
    assert uninterrupted[0].history == uninterrupted[2].history


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kill, start", [(KillAfterFirstEpoch(), (1, 6, None)), (KillAtStep(9), (1, 8, 2))],
                         ids=["epoch-end", "mid-epoch"])
def test_kill_and_resume_with_workers_matches_the_uninterrupted_run_exactly(tmp_path, uninterrupted, workers,
                                                                            kill, start):
    data, val = NoisyToyData(96), NoisyToyData(32, seed=1)
    killed = Engine(make_cfg(tmp_path, num_workers=workers, save_every_steps=1), toy_model(), task(), data, val,
                    callbacks=[kill])
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    resumed = Engine(make_cfg(tmp_path, num_workers=workers, resume=True), toy_model(seed=123), task(), data, val)
    partial = resumed.partial_epoch["batches"] if resumed.partial_epoch else None
    assert (resumed.start_epoch, resumed.global_step, partial) == start  # epoch 2, 6 steps an epoch
    resumed.fit()
    resumed.close()
    full = uninterrupted[workers]
    assert resumed.global_step == full.global_step == 3 * full.updates_per_epoch
    assert resumed.history == full.history
    assert_same_weights(full, resumed)


def test_resuming_with_more_epochs_continues_a_longer_cosine_to_min_lr(tmp_path):
    """The rule (shared/optim.py resume_scheduler): the cosine is rebuilt for the new length and jumped to
    the resumed step, so the lr continues above min_lr and decays to it at the new end."""
    cfg = dict(num_workers=0, lr=1e-2, min_lr=1e-4, warmup_epochs=0.0)
    data = NoisyToyData(64)
    short = Engine(make_cfg(tmp_path, epochs=2, **cfg), toy_model(), task(), data, None)
    short.fit()
    short.close()
    assert short.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)  # the 2-epoch cosine ended at min_lr

    lrs = []

    class RecordLR(Callback):
        def on_train_batch_end(self, engine, batch, outputs):
            lrs.append(engine.optimizer.param_groups[0]["lr"])

    longer = Engine(make_cfg(tmp_path, epochs=4, resume=True, **cfg), toy_model(), task(), data, None,
                    callbacks=[RecordLR()])
    resumed_lr = longer.optimizer.param_groups[0]["lr"]
    # halfway along the 4-epoch cosine: (lr + min_lr) / 2
    assert resumed_lr == pytest.approx((1e-2 + 1e-4) / 2, rel=1e-6)
    history = longer.fit()
    longer.close()
    assert len(history) == 4 and longer.global_step == 4 * longer.updates_per_epoch
    assert all(a >= b for a, b in zip([resumed_lr] + lrs, lrs))  # decays monotonically from there
    assert lrs[-1] == pytest.approx(1e-4)  # and reaches min_lr at the new end

    # with the same epochs, the rebuilt schedule is the saved one: the lr of the uninterrupted run
    again = Engine(make_cfg(tmp_path, epochs=4, resume=True, **cfg), toy_model(), task(), data, None)
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    again.close()
