"""End-to-end runs on the shared engine: outputs, TensorBoard content, kill-and-resume, pretrain -> Mosa."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from alzheimer_mosa import train_mosa
from alzheimer_mosa.callbacks import TensorBoardCallback
from alzheimer_mosa.config import PretrainConfig
from alzheimer_mosa.model_builder import build_backbone, build_mosa
from alzheimer_mosa.training import train
from shared import load_checkpoint, run_cli
from shared.testing import free_port, scalar_steps as logged_steps

STEPS_PER_EPOCH = 2  # 8 training volumes in batches of 4


def read_events(log_dir: str) -> EventAccumulator:
    """The run's event files read back the way TensorBoard shows them (purged steps dropped)."""
    accumulator = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def scalar_steps(events: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in events.Scalars(tag)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, demo_root, config_factory):
    """A two-epoch Mosa run with histograms every epoch, shared by the output tests."""
    cfg = config_factory(tmp_path_factory.mktemp("run"), demo_root)
    return cfg, train(cfg, build_mosa, "mosa")


def test_checkpoints_hold_the_resume_state(finished_run):
    cfg, summary = finished_run
    folder = Path(cfg.logging.checkpoint_dir)
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        state = load_checkpoint(folder / name)
        assert {"model", "epoch", "best_metric", "optimizer", "scheduler", "log_dir", "global_step"} <= set(state)
        assert state["log_dir"] == summary["log_dir"]
        assert state["class_names"] == cfg.data.class_names  # the one key every project's checkpoints use
    latest = load_checkpoint(folder / "checkpoint.pth.tar")
    assert latest["epoch"] == 2 and latest["global_step"] == 2 * STEPS_PER_EPOCH
    assert summary["global_step"] == 2 * STEPS_PER_EPOCH


def test_summary_and_per_class_json(finished_run):
    cfg, summary = finished_run
    run = Path(summary["log_dir"])
    on_disk = json.loads((run / "summary_all.json").read_text())
    assert on_disk["best_epoch"] in (1, 2) and on_disk["monitor"] == "val/loss"
    assert on_disk["class_names"] == ["CN", "AD"] and on_disk["positive_class"] == "AD"
    for split in ("best_val", "test"):
        assert {"accuracy", "auc", "recall", "precision", "specificity", "f1_weighted", "f1_macro",
                "loss"} <= set(on_disk[split])
        assert 0.0 <= on_disk[split]["accuracy"] <= 1.0
    assert on_disk["best_metric"] == pytest.approx(on_disk["best_val"]["loss"])  # best model re-evaluated on val
    assert on_disk["config"]["backbone"]["model_type"] == "resnet10_3d"
    for name in ("best_val_per_class_metrics.json", "test_per_class_metrics.json"):
        report = json.loads((run / name).read_text())
        assert list(report["classes"]) == ["CN", "AD"]
        assert [c["support"] for c in report["classes"].values()] == [2, 2]
        assert report["confusion_matrix"]["rows_true_columns_predicted"] == ["CN", "AD"]
        assert [sum(row) for row in report["confusion_matrix"]["matrix"]] == [2, 2]
        assert set(report["classes"]["AD"]) == {"precision", "recall", "f1", "specificity", "auc", "support"}
    for figure in ("confusion_matrix", "roc", "pr"):  # the latest epoch's validation
        assert (run / "figures" / f"val_{figure}.png").stat().st_size > 1000
    for split in ("val", "test"):  # the best model (shared.evaluate_best)
        for figure in ("confusion", "roc", "pr"):
            assert (run / "results" / f"{split}_{figure}.png").stat().st_size > 1000


def test_tensorboard_tags_steps_histograms_and_images(finished_run):
    _, summary = finished_run
    events = read_events(summary["log_dir"])
    tags = events.Tags()
    assert scalar_steps(events, "Train/Batch/loss") == [1, 2, 3, 4]  # steps done, this batch included
    for tag in ("Train/Batch/accuracy", "Train/Batch/lr", "Train/Batch/f1_macro"):
        assert tag in tags["scalars"]
    for prefix in ("Train", "Val"):
        for name in ("loss", "accuracy", "recall", "precision", "specificity", "f1_weighted", "f1_macro", "auc"):
            assert scalar_steps(events, f"{prefix}/{name}") == [2, 4], f"{prefix}/{name}"
    assert scalar_steps(events, "Test/auc") == [4]
    assert "Params/backbone.conv1.weight" in tags["histograms"]
    assert "Grads/encoders.0.blocks.0.attn.qkv.weight" in tags["histograms"]
    assert {"Val/confusion_matrix", "Val/roc", "Val/pr", "Test/confusion_matrix", "Test/roc", "Test/pr"} <= set(tags["images"])
    assert not any(tag.startswith(("train/", "val/")) for tag in tags["scalars"])  # no engine duplicates


class SimulatedKill(Exception):
    pass


def test_kill_and_resume_continues_global_step_without_duplicate_events(make_config, monkeypatch):
    """Checkpoint every 2 epochs, die in the middle of epoch 3, resume from the epoch-2 checkpoint:
    epoch 3 is trained again, and TensorBoard shows every step exactly once and keeps epoch 2's values."""
    settings = {"train": {"epochs": 3, "save_every": 2}, "logging": {"hist_interval": 0}}
    cfg = make_config(**settings)
    original = TensorBoardCallback.on_train_batch_end

    def dying(self, engine, batch, outputs):
        original(self, engine, batch, outputs)
        if engine.global_step == 2 * STEPS_PER_EPOCH + 2:  # second batch of epoch 3, already logged
            raise SimulatedKill

    monkeypatch.setattr(TensorBoardCallback, "on_train_batch_end", dying)
    with pytest.raises(SimulatedKill):
        train(cfg, build_mosa, "mosa")
    monkeypatch.setattr(TensorBoardCallback, "on_train_batch_end", original)
    checkpoint = Path(cfg.logging.checkpoint_dir) / "checkpoint.pth.tar"
    saved = load_checkpoint(checkpoint)
    assert saved["epoch"] == 2 and saved["global_step"] == 2 * STEPS_PER_EPOCH
    killed = read_events(saved["log_dir"])  # the killed run's tail, past the checkpoint, is on disk
    assert scalar_steps(killed, "Train/Batch/loss") == list(range(1, 2 * STEPS_PER_EPOCH + 3))

    settings["train"]["resume_checkpoint"] = str(checkpoint)
    summary = train(make_config(**settings), build_mosa, "mosa")
    assert summary["log_dir"] == saved["log_dir"]  # same log folder
    assert summary["global_step"] == 3 * STEPS_PER_EPOCH
    # two event files (killed run, resume): read in the order written, the resume's purge_step applied
    assert logged_steps(summary["log_dir"], "Train/Batch/loss") == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    for tag in ("Val/auc", "Train/loss", "Train/accuracy"):
        assert logged_steps(summary["log_dir"], tag) == [2, 4, 6], tag
    history = json.loads((Path(summary["log_dir"]) / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_pretrained_backbone_loads_into_mosa_and_stays_frozen(make_config, tmp_path):
    pretrain_cfg = make_config(PretrainConfig, train={"epochs": 1},
                               logging={"hist_interval": 0, "checkpoint_dir": str(tmp_path / "resnet")})
    train(pretrain_cfg, build_backbone, "resnet3d")
    weights = tmp_path / "resnet" / "model_best.pth.tar"
    pretrained = load_checkpoint(weights)["model"]

    mosa_cfg = make_config(backbone={"pretrained": True, "pretrained_path": str(weights), "freeze_epochs": 1},
                           train={"epochs": 1}, logging={"hist_interval": 0})
    assert torch.equal(build_mosa(mosa_cfg).backbone.layer4[0].conv1.weight, pretrained["layer4.0.conv1.weight"])
    train(mosa_cfg, build_mosa, "mosa")
    trained = load_checkpoint(Path(mosa_cfg.logging.checkpoint_dir) / "checkpoint.pth.tar")["model"]
    for key in ("conv1.weight", "layer2.0.conv2.weight", "bn1.running_mean"):
        assert torch.equal(trained[f"backbone.{key}"], pretrained[key]), key  # frozen for the only epoch
    assert not torch.equal(trained["head.1.weight"], build_mosa(mosa_cfg).head[1].weight)


def test_two_process_ddp_run_freezes_unfreezes_and_logs_once(tmp_path):
    """``torchrun`` (what ``accelerate launch`` starts) with 2 CPU processes: gloo DDP with the global
    batch split over both, the frozen-then-trained backbone, and one set of outputs."""
    script = Path(__file__).parents[1] / "train_mosa.py"
    args = ["--train.epochs", "2", "--data.target_size", "[16,16,16]", "--backbone.model_type", "resnet10_3d",
            "--backbone.width", "8", "--backbone.freeze_epochs", "1", "--mosa.embed_dim", "16",
            "--train.num_workers", "0", "--train.batch_size", "8", "--train.progress_bar", "false",
            "--train.mixed_precision", "no"]  # bf16 autocast on the CPU gave NaN gradients after the unfreeze
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("summary_all.json") == 1  # only the main process reports
    assert "epoch 1: backbone frozen" in proc.stderr and "epoch 2: backbone unfrozen" in proc.stderr
    runs = list((tmp_path / "logs").iterdir())
    assert len(runs) == 1  # both processes agreed on the run folder
    events = read_events(str(runs[0]))
    assert scalar_steps(events, "Train/Batch/loss") == list(range(1, 2 * 32 // 8 + 1))  # 32 demo volumes, global batch 8
    latest = load_checkpoint(tmp_path / "checkpoints" / "mosa" / "checkpoint.pth.tar")
    assert latest["global_step"] == 2 * 32 // 8


@pytest.mark.parametrize("weights_file, reason", [("absent.pth", "not found"), ("notes.txt", "cannot read checkpoint")])
def test_bad_pretrained_path_is_one_line_not_a_traceback(demo_root, tmp_path, weights_file, reason):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    argv = ["--data.data_root", str(demo_root), "--data.target_size", "[16,16,16]", "--train.num_workers", "0",
            "--backbone.model_type", "resnet10_3d", "--backbone.width", "8", "--mosa.embed_dim", "16",
            "--mosa.depth", "1", "--mosa.num_heads", "2", "--train.epochs", "1",
            "--logging.checkpoint_dir", str(tmp_path / "ckpt"), "--train.output_dir", str(tmp_path / "logs"),
            "--train.progress_bar", "false", "--backbone.pretrained", "true",
            "--backbone.pretrained_path", str(tmp_path / weights_file)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_mosa.main, argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: CheckpointError: ") and "\n" not in message
    assert reason in message and weights_file in message
