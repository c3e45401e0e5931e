"""A run folder is never silently overwritten, and temporary files of killed writes are cleaned up."""
import json
import re

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from shared import CheckpointError, ConfigError, EarlyStoppingConfig, Engine, MultiLabelTask, TrainConfig
from shared.losses import AsymmetricLoss
from shared.run_folder import RunExistsError


def toy_data(n=32):
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(0))
    return TensorDataset(x, (x[:, :3] > 0).float())


def toy_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3))


def cfg(out, **overrides):
    base = dict(output_dir=str(out), epochs=1, batch_size=16, num_workers=0, mixed_precision="no",
                progress_bar=False, early_stopping=EarlyStoppingConfig(monitor="val/loss"))
    return TrainConfig(**{**base, **overrides})


def train(config, **kwargs):
    engine = Engine(config, toy_model(), MultiLabelTask(AsymmetricLoss(), list("abc")), toy_data(), toy_data(16),
                    **kwargs)
    history = engine.fit()
    engine.close()
    return engine, history


def test_a_second_run_into_the_same_folder_is_refused_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    train(cfg(run))
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RunExistsError) as err:
        train(cfg(run, epochs=2))
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, ConfigError)  # one line; run_cli prints ConfigErrors
    assert "not starting a new run: a run is already there" in message
    assert str(run / "checkpoints" / "checkpoint_latest.pth") in message and str(run / "history.json") in message
    assert "--train.resume true" in message and "--train.overwrite true" in message
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before  # nothing touched


def test_overwrite_deletes_the_old_run_first(tmp_path, capsys):
    run = tmp_path / "run"
    train(cfg(run, epochs=2))
    (run / "results").mkdir()
    (run / "results" / "test_metrics.json").write_text("{}")  # the old run's evaluation must not survive
    capsys.readouterr()
    _, history = train(cfg(run, epochs=1, overwrite=True))
    assert "train.overwrite: deleted the previous run's" in capsys.readouterr().out
    assert not (run / "results").exists()
    assert len(history) == 1 and len(json.loads((run / "history.json").read_text())) == 1
    assert len(list((run / "logs" / "tensorboard").glob("events.out.tfevents*"))) == 1  # the old events went too
    assert torch.load(run / "checkpoints" / "checkpoint_latest.pth", weights_only=True)["epoch"] == 1


def test_resume_continues_the_run_in_its_own_folder(tmp_path):
    run = tmp_path / "run"
    train(cfg(run, epochs=1))
    engine, history = train(cfg(run, epochs=2, resume=True))
    assert engine.start_epoch == 1 and len(history) == 2


def test_resuming_another_folders_checkpoint_into_a_run_is_refused_and_into_an_empty_folder_allowed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg(a))
    train(cfg(b))
    source = str(a / "checkpoints" / "checkpoint_latest.pth")
    a_files = {p: p.stat().st_mtime_ns for p in a.rglob("*") if p.is_file()}
    refusal = f"not resuming .*checkpoint_latest.pth into another run: a run is already there \\({re.escape(str(b))}"
    with pytest.raises(RunExistsError, match=refusal):
        train(cfg(b, epochs=2, resume=True, resume_checkpoint=source))
    engine, history = train(cfg(tmp_path / "c", epochs=2, resume=True, resume_checkpoint=source))
    assert engine.start_epoch == 1 and (tmp_path / "c" / "checkpoints" / "checkpoint_latest.pth").is_file()
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*") if p.is_file()} == a_files  # the source run untouched
    with pytest.raises(ConfigError, match="pass only one of them"):
        train(cfg(a, epochs=2, resume=True, overwrite=True))


def test_a_fold_folder_that_is_its_own_checkpoint_folder_is_protected_too(tmp_path):
    fold = tmp_path / "fold_1"  # clip_medical: checkpoints sit in the fold folder itself
    train(cfg(fold), checkpoint_dir=fold)
    with pytest.raises(RunExistsError, match="a run is already there .*fold_1"):
        train(cfg(fold), checkpoint_dir=fold)
    train(cfg(fold, overwrite=True), checkpoint_dir=fold)


def test_stale_temporary_files_are_removed_at_start_up_with_their_size(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / ".checkpoint_latest.pth.ab12cd.tmp").write_bytes(b"x" * 1000)
    (run / ".history.json.zz9.tmp").write_bytes(b"y" * 24)
    (run / "checkpoints" / "notes.tmp").write_text("not ours")  # not the atomic-write pattern: kept
    train(cfg(run))
    out = capsys.readouterr().out
    assert "removed 2 stale temporary file(s) left by an interrupted write (1024 bytes)" in out
    assert not list(run.rglob(".*.tmp")) and (run / "checkpoints" / "notes.tmp").is_file()
    # a resume cleans up too (the usual case: the run was killed mid-write)
    (run / "checkpoints" / ".checkpoint_latest.pth.q.tmp").write_bytes(b"z" * 7)
    train(cfg(run, epochs=2, resume=True))
    assert "(7 bytes)" in capsys.readouterr().out and not list(run.rglob(".*.tmp"))


def test_a_refused_resume_deletes_and_writes_nothing_even_with_overwrite(tmp_path):
    """The checkpoint is checked (classes, split) before train.overwrite deletes the folder's run: on main a
    resume refused for its classes had already deleted the run it was to replace."""
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg(a))
    train(cfg(b))
    b_files = {p: p.read_bytes() for p in b.rglob("*") if p.is_file()}
    source = str(a / "checkpoints" / "checkpoint_latest.pth")
    other_classes = MultiLabelTask(AsymmetricLoss(), list("cba"))
    with pytest.raises(CheckpointError, match=r"trained on classes \['a', 'b', 'c'\], but this run has "
                                              r"\['c', 'b', 'a'\]; resume with that run's classes in that order"):
        Engine(cfg(b, epochs=2, resume=True, resume_checkpoint=source, overwrite=True), toy_model(), other_classes,
               toy_data(), toy_data(16))
    assert {p: p.read_bytes() for p in b.rglob("*") if p.is_file()} == b_files


def test_resuming_another_folders_checkpoint_brings_its_best_checkpoints_along(tmp_path):
    """Its best metric is restored, so load_best must find the best weights in the new folder even when no
    resumed epoch beats them (on main it failed after all the training)."""
    a, c = tmp_path / "a", tmp_path / "c"
    train(cfg(a, epochs=2))
    best = torch.load(a / "checkpoints" / "checkpoint_best_ema.pth", weights_only=True)
    engine, _ = train(cfg(c, epochs=2, resume=True, resume_checkpoint=str(a / "checkpoints" / "checkpoint_latest.pth")))
    assert engine.start_epoch == 2  # nothing left to train: the best weights are the first run's
    copied = torch.load(c / "checkpoints" / "checkpoint_best_ema.pth", weights_only=True)
    assert all(torch.equal(copied["model"][k], best["model"][k]) for k in best["model"])
    model = engine.load_best(use_ema=True)
    assert all(torch.equal(model.state_dict()[k], best["model"][k]) for k in best["model"])
