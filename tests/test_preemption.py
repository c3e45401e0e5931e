"""SIGTERM/SIGINT during fit: finish the step, save a mid-epoch checkpoint_latest, exit 143/130; resuming it
continues the epoch and ends with the weights of an uninterrupted run, bit for bit. Killed training processes
(SIGKILL and SIGTERM, with loader workers): tests/test_fault_injection.py."""
import os
import signal

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from shared import Callback, EarlyStoppingConfig, Engine, MultiLabelTask, TrainConfig, load_checkpoint
from shared.losses import AsymmetricLoss


def toy_data(n=96, seed=0):
    w = torch.randn(6, 3, generator=torch.Generator().manual_seed(99))
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, ((x @ w) > 0).float())


def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Dropout(0.3), nn.Linear(32, 3))  # dropout: RNG matters


def make_cfg(out, **overrides):
    base = dict(output_dir=str(out), epochs=3, batch_size=16, num_workers=0, lr=5e-3, warmup_epochs=0.5,
                mixed_precision="no", progress_bar=False, log_every=4, ema_decay=0.9,
                early_stopping=EarlyStoppingConfig(monitor="val/macro_auroc", mode="max"))
    return TrainConfig(**{**base, **overrides})


def engine_for(cfg, callbacks=(), seed=0):
    return Engine(cfg, toy_model(seed), MultiLabelTask(AsymmetricLoss(), list("abc")), toy_data(), toy_data(32, 1),
                  callbacks=callbacks)


class Signal(Callback):
    """Sends ``signum`` to this process after optimizer step ``step`` (as a scheduler or Ctrl-C would)."""

    def __init__(self, signum, step):
        self.signum, self.step = signum, step

    def on_train_batch_end(self, engine, batch, outputs):
        if engine.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class Crash(Callback):
    def on_train_batch_end(self, engine, batch, outputs):
        if engine.global_step == 10:
            raise RuntimeError("killed")


def assert_same_run(a, b):
    for x, y in zip([*a.model.parameters(), *a.ema.module.parameters()],
                    [*b.model.parameters(), *b.ema.module.parameters()]):
        assert torch.equal(x, y)
    assert a.global_step == b.global_step
    assert a.history == b.history  # the interrupted epoch's train/loss mean is the uninterrupted one's


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    engine = engine_for(make_cfg(tmp_path_factory.mktemp("full") / "run"))
    engine.fit()
    engine.close()
    return engine


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_epoch_saves_exits_and_the_resume_matches_an_uninterrupted_run(
        tmp_path, capfd, uninterrupted, signum, code):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    killed = engine_for(make_cfg(tmp_path / "run"), [Signal(signum, 8)])  # 6 steps per epoch: epoch 2, batch 2
    with pytest.raises(SystemExit) as exited:
        killed.fit()
    assert exited.value.code == code
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the previous handlers are back
    out = capfd.readouterr()  # the signal handler writes to file descriptor 2
    assert "received: finishing the current optimizer step" in out.err
    assert "stopped by" in out.out and "epoch 2, after batch 2 (step 8)" in out.out
    assert "Resume with:" in out.out and out.out.rstrip().endswith("--train.resume true")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint_latest.pth")
    assert (state["epoch"], state["global_step"], state["partial_epoch"]["batches"]) == (1, 8, 2)

    resumed = engine_for(make_cfg(tmp_path / "run", resume=True), seed=123)
    assert (resumed.start_epoch, resumed.global_step) == (1, 8)
    resumed.fit()
    resumed.close()
    assert_same_run(uninterrupted, resumed)


def test_save_every_steps_writes_resumable_mid_epoch_checkpoints(tmp_path, uninterrupted):
    crashed = engine_for(make_cfg(tmp_path / "run", save_every_steps=4), [Crash()])
    with pytest.raises(RuntimeError, match="killed"):
        crashed.fit()
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint_latest.pth")
    assert (state["epoch"], state["global_step"], state["partial_epoch"]["batches"]) == (1, 8, 2)
    resumed = engine_for(make_cfg(tmp_path / "run", save_every_steps=4, resume=True), seed=123)
    resumed.fit()
    resumed.close()
    assert_same_run(uninterrupted, resumed)


def test_a_signal_during_validation_stops_at_the_end_of_the_epoch(tmp_path):
    class SignalAtEpochEnd(Callback):
        def on_epoch_end(self, engine, epoch, metrics):
            if epoch == 0:
                os.kill(os.getpid(), signal.SIGTERM)

    engine = engine_for(make_cfg(tmp_path / "run", save_every=2), [SignalAtEpochEnd()])
    with pytest.raises(SystemExit) as exited:
        engine.fit()
    assert exited.value.code == 143
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint_latest.pth")
    assert state["epoch"] == 1 and state["partial_epoch"] is None  # save_every=2 skipped it; the signal saved it
