"""Nothing random escapes the seed: the training order and loader workers' generators come from (seed, epoch),
so a run resumed at an epoch boundary ends with exactly the uninterrupted run's weights, also with loader
workers and a random augmentation inside ``__getitem__``; and resuming with more epochs continues the schedule."""
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from shared import Callback, EarlyStoppingConfig, Engine, MultiLabelTask, TrainConfig
from shared.loaders import EpochSeeding, EpochSampler, derived_seed
from shared.losses import AsymmetricLoss


class NoisyToyData(Dataset):
    """Toy multi-label data whose ``__getitem__`` adds ``torch.rand`` noise, like a random augmentation:
    the result depends on the generator of whichever process (main or worker) loads the sample."""

    def __init__(self, n=96, seed=0):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(6, 3, generator=torch.Generator().manual_seed(99))
        self.x = torch.randn(n, 6, generator=g)
        self.y = ((self.x @ w) > 0).float()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.5 * torch.rand(6), self.y[i]


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


def test_epoch_seeds_differ_by_epoch_process_and_worker_and_repeat_for_the_same_ones():
    a, b = EpochSeeding(7), EpochSeeding(7, process_index=1)
    assert a.worker_seed(0) != a.worker_seed(1) != b.worker_seed(1)
    first = list(EpochSampler(20, a))
    a.set_epoch(1)
    second = list(EpochSampler(20, a))
    assert sorted(first) == sorted(second) == list(range(20)) and first != second
    a.set_epoch(0)
    assert list(EpochSampler(20, a)) == first
    assert derived_seed(7, 1) != derived_seed(8, 0)  # not seed + epoch
    weighted = EpochSampler(20, a, weights=[0.0] * 10 + [1.0] * 10)
    assert len(list(weighted)) == 20 and min(weighted) >= 10


@pytest.mark.parametrize("workers", [0, 2])
def test_kill_and_resume_with_workers_matches_the_uninterrupted_run_exactly(tmp_path, workers):
    data, val = NoisyToyData(96), NoisyToyData(32, seed=1)
    full = Engine(make_cfg(tmp_path / "a", num_workers=workers), toy_model(), task(), data, val)
    full_history = full.fit()
    full.close()

    killed = Engine(make_cfg(tmp_path / "b", num_workers=workers), toy_model(), task(), data, val,
                    callbacks=[KillAfterFirstEpoch()])
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    resumed = Engine(make_cfg(tmp_path / "b", num_workers=workers, resume=True), toy_model(seed=123), task(),
                     data, val)
    assert resumed.start_epoch == 1
    resumed_history = resumed.fit()
    resumed.close()

    assert resumed.global_step == full.global_step == 3 * full.updates_per_epoch
    assert [h["train/loss"] for h in resumed_history] == [h["train/loss"] for h in full_history]
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema.module.parameters(), resumed.ema.module.parameters()):
        assert torch.equal(a, b)


def test_the_same_seed_twice_gives_the_same_losses_with_workers(tmp_path):
    runs = []
    for name in ("a", "b"):
        engine = Engine(make_cfg(tmp_path / name, epochs=2), toy_model(), task(), NoisyToyData(64), None)
        runs.append([h["train/loss"] for h in engine.fit()])
        engine.close()
    assert runs[0] == runs[1]
    other = Engine(make_cfg(tmp_path / "c", epochs=1, seed=43), toy_model(), task(), NoisyToyData(64), None)
    assert other.fit()[0]["train/loss"] != runs[0][0]  # the seed reaches the data: order and noise
    other.close()


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
