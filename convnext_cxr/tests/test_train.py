"""End-to-end: train.py on tiny synthetic data (1 and 2 processes), resume, export, predict."""
import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convnext_cxr import predict, train
from convnext_cxr.model import CXRClassifier, ModelConfig
from shared import ConfigError, load_checkpoint, load_export, load_model_weights
from shared.testing import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained_run(tiny_cxr, tiny_train_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    metrics = train.main(tiny_train_args(*tiny_cxr, out, epochs=3))
    return out, metrics


def test_training_learns_and_writes_every_output(trained_run):
    out, results = trained_run
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 3
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    for path in ("checkpoints/checkpoint_latest.pth", "checkpoints/checkpoint_best.pth",
                 "checkpoints/checkpoint_best_ema.pth", "results/training_curves.png", "results/test_roc.png",
                 "results/test_metrics.json", "results/test_per_class.csv", "results/test_predictions.csv",
                 "results/val_metrics.json", "export/model.safetensors", "export/model.json", "config.yaml"):
        assert (out / path).is_file(), path
    assert list((out / "logs").rglob("events.out.tfevents*"))
    table = (out / "results" / "test_per_class.csv").read_text().splitlines()
    assert table[0].startswith("class,positives,auroc") and len(table) == 15
    assert 0.0 <= results["splits"]["test"]["macro_auroc"] <= 1.0
    export = json.loads((out / "export" / "model.json").read_text())
    assert len(export["class_names"]) == 14 and len(export["thresholds"]) == 14


def test_resume_continues_epochs_and_steps(trained_run, tiny_cxr, tiny_train_args, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(trained_run[0], out)
    first = load_checkpoint(out / "checkpoints" / "checkpoint_latest.pth")
    args = tiny_train_args(*tiny_cxr, out, epochs=4, extra=["--train.resume", "true"])
    train.main(args)
    resumed = load_checkpoint(out / "checkpoints" / "checkpoint_latest.pth")
    assert resumed["epoch"] == 4 and len(resumed["history"]) == 4
    steps_per_epoch = first["global_step"] // 3
    assert resumed["global_step"] == 4 * steps_per_epoch


def test_predict_prints_probabilities_and_writes_heatmap(trained_run, tiny_cxr, tmp_path):
    out, _ = trained_run
    image_dir, _ = tiny_cxr
    image = sorted(image_dir.glob("*.png"))[0]
    results = predict.main(["--export_dir", str(out / "export"), "--out-dir", str(tmp_path), "--images", str(image)])
    probs = results[str(image)]
    assert len(probs) == 14 and all(0.0 <= p <= 1.0 for p in probs.values())
    assert (tmp_path / f"{image.stem}_heatmap.png").stat().st_size > 1000
    assert json.loads((tmp_path / "predictions.json").read_text())["images"][str(image)] == probs


def test_export_rebuilds_the_trained_model(trained_run):
    """export/ alone (no pickle, no config file) gives the best EMA model that the test metrics came from."""
    out, results = trained_run
    exported, info = load_export(out / "export")
    best = load_checkpoint(out / "checkpoints" / "checkpoint_best_ema.pth")
    trained = CXRClassifier(ModelConfig(**{**best["config"]["model"], "pretrained": False}), num_labels=14)
    load_model_weights(trained, best["model"])
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(exported(images), trained.eval()(images))
    assert info["project"] == "convnext_cxr" and info["task"] == "multi-label" and len(info["class_names"]) == 14
    assert info["thresholds"] == pytest.approx(results["thresholds"].tolist())
    assert info["preprocessing"]["size"] == [32, 32] and info["preprocessing"]["spatial_dims"] == 2


def test_two_process_gloo_run_matches_single_process_bookkeeping(trained_run, tiny_cxr, tiny_train_args, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(REPO / "convnext_cxr" / "train.py"), *tiny_train_args(*tiny_cxr, out, epochs=2)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = load_checkpoint(trained_run[0] / "checkpoints" / "checkpoint_latest.pth")
    ddp = load_checkpoint(out / "checkpoints" / "checkpoint_latest.pth")
    # global batch 16 = 2 processes x 8: the same number of optimizer steps per epoch as one process
    assert ddp["global_step"] == 2 * (single["global_step"] // 3)
    # gather_for_metrics saw every test image exactly once (no padding duplicates)
    positives = [int(row.split(",")[1]) for row in (out / "results" / "test_per_class.csv").read_text().splitlines()[1:15]]
    single_positives = [int(row.split(",")[1]) for row in
                        (trained_run[0] / "results" / "test_per_class.csv").read_text().splitlines()[1:15]]
    assert positives == single_positives
    assert "on 2 processes" in proc.stdout


def test_source_document_config_keys_are_accepted(tmp_path):
    """The source README's keys (batch_size, learning_rate, num_epochs, loss_type) mean train.* / loss.*."""
    source = tmp_path / "config.yaml"
    source.write_text("batch_size: 64\nloss_type: focal\ntrain:\n  learning_rate: 0.0002\n  num_epochs: 30\n")
    cfg = train.parse_config(["--config", str(source)])
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.epochs, cfg.loss.loss_type) == (64, 2e-4, 30, "focal")
    assert train.parse_config(["--learning_rate", "3e-4", "--num_epochs", "5"]).train.lr == 3e-4
    with pytest.raises(ConfigError, match="another name for train.lr"):
        train.parse_config(["--config", str(source), "--train.lr", "1e-3", "--learning_rate", "1e-3"])


def _without(args, *keys):
    """``args`` less the ``--key value`` pairs of ``keys``."""
    drop = {i + k for i, arg in enumerate(args) if arg in keys for k in (0, 1)}
    return [arg for i, arg in enumerate(args) if i not in drop]


def test_source_document_command_line_reaches_the_optimizer(tiny_cxr, tiny_train_args, tmp_path):
    """The source README's settings (batch_size, learning_rate, num_epochs, loss_type) on train.py's command
    line, then its resume recipe (train.resume, train.resume_checkpoint) in a config file of its layout."""
    args = _without(tiny_train_args(*tiny_cxr, tmp_path), "--train.epochs", "--train.batch_size", "--train.lr")
    train.main([*args, "--batch_size", "8", "--learning_rate", "0.002", "--num_epochs", "1", "--loss_type", "focal",
                "--train.limit_train_batches", "2"])
    state = load_checkpoint(tmp_path / "checkpoints" / "checkpoint_latest.pth")
    assert state["config"]["train"]["batch_size"] == 8 and state["config"]["train"]["epochs"] == 1
    assert state["config"]["loss"]["loss_type"] == "focal"
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.002)  # the optimizer's peak lr
    assert state["global_step"] == 2  # 2 batches of 8: batch_size reached the loader
    source = tmp_path / "source_config.yaml"
    source.write_text("batch_size: 8\nlearning_rate: 0.002\nnum_epochs: 2\nloss_type: focal\n"
                      "train:\n  resume: true\n  resume_checkpoint: \"checkpoints/checkpoint_latest.pth\"\n")
    train.main(["--config", str(source), *_without(args, "--train.epochs"), "--train.limit_train_batches", "2"])
    resumed = load_checkpoint(tmp_path / "checkpoints" / "checkpoint_latest.pth")
    assert (resumed["epoch"], resumed["global_step"], len(resumed["history"])) == (2, 4, 2)
