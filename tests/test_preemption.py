"""SIGTERM/SIGINT during fit: finish the step, save a mid-epoch checkpoint_latest, exit 143/130; resuming it
continues the epoch and ends with the weights of an uninterrupted run, bit for bit."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from shared import Callback, EarlyStoppingConfig, Engine, MultiLabelTask, TrainConfig, load_checkpoint
from shared.losses import AsymmetricLoss

REPO = Path(__file__).resolve().parents[1]


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


SCRIPT = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)
    from shared import Callback
    sys.path.insert(0, {tests!r})
    from test_preemption import engine_for, make_cfg

    class Slow(Callback):  # prints each step, so the test knows when to send the signal
        def on_train_batch_end(self, engine, batch, outputs):
            print(f"step {{engine.global_step}}", flush=True)
            time.sleep(float(sys.argv[3]))

    engine = engine_for(make_cfg(sys.argv[1], resume=sys.argv[2] == "resume"), [Slow()])
    engine.fit()
    engine.close()
    torch.save({{"model": engine.model.state_dict(), "ema": engine.ema.module.state_dict(),
                 "history": engine.history}}, sys.argv[1] + "/final.pt")
''')


def test_sigterm_to_a_training_process_exits_143_and_resuming_gives_the_uninterrupted_weights(tmp_path):
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def run(out, mode, delay="0"):
        return subprocess.run([sys.executable, str(script), str(out), mode, delay], env=env, capture_output=True,
                              text=True, timeout=300)

    full = run(tmp_path / "full", "new")
    assert full.returncode == 0, full.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(out), "new", "0.2"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == "step 3":
            proc.send_signal(signal.SIGTERM)
            break
    stdout, stderr = proc.communicate(timeout=300)
    stdout = "".join(lines) + stdout
    assert proc.returncode == 143, stderr[-2000:]
    assert "SIGTERM received" in stderr and "--train.resume true" in stdout
    state = load_checkpoint(out / "checkpoints" / "checkpoint_latest.pth")
    assert state["epoch"] == 0 and 3 <= state["global_step"] < 6 and state["partial_epoch"]["batches"] >= 3
    assert not (out / "final.pt").exists()

    resumed = run(out, "resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (torch.load(path, weights_only=True) for path in (tmp_path / "full" / "final.pt", out / "final.pt"))
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert a["history"] == b["history"]
