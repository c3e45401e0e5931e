"""The one command line (the source document's spellings included) and the one exported model format."""

import json
from pathlib import Path

import pytest
import torch
from timm.scheduler import StepLRScheduler

from alzheimer_mosa import train_mosa, training
from alzheimer_mosa.augment import export_preprocessing
from alzheimer_mosa.config import Config, config_from_cli
from alzheimer_mosa.model_builder import PROJECT, architecture, build_backbone, build_mosa
from alzheimer_mosa.training import engine_config, main
from shared import Engine, FocalLoss, export_model, load_export, read_json, run_cli

TINY_ARGV = ["--data.target_size", "[16,16,16]", "--backbone.model_type", "resnet10_3d", "--backbone.width", "8",
             "--mosa.embed_dim", "16", "--mosa.depth", "1", "--mosa.num_heads", "2", "--train.warmup_epochs", "0",
             "--train.mixed_precision", "no", "--train.num_workers", "0"]


def test_source_document_spellings_reach_the_config_optimizer_and_loss(demo_root, tmp_path, monkeypatch):
    """``cfg.training.learning_rate = 5e-5`` and the other TrainingConfig / DataConfig / LoggingConfig keys
    of the source document, in a config file and on the command line, through ``main(argv)``."""
    document_yaml = tmp_path / "document.yaml"
    document_yaml.write_text(
        "training:\n  optimizer: sgd\n  learning_rate: 5.0e-5\n  lr_scheduler: step\n  step_size: 1\n"
        "  loss_fn: focal\n  epochs: 1\ndata:\n  batch_size: 4\nlogging:\n  progress_bar: false\n  hist_interval: 0\n")
    argv = ["--config", str(document_yaml), "--data.data_root", str(demo_root), *TINY_ARGV,
            "--training.momentum", "0.8", "--training.seed", "3", "--training.monitor", "val/accuracy",
            "--training.monitor_mode", "max", "--training.checkpoint_dir", str(tmp_path / "ckpt"),
            "--training.log_dir", str(tmp_path / "logs"), "--training.save_freq", "1"]
    engines = []

    class RecordingEngine(Engine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            engines.append(self)

    monkeypatch.setattr(training, "Engine", RecordingEngine)
    summary = main(Config, build_mosa, "mosa", argv)
    train = summary["config"]["train"]
    assert (train["optimizer"], train["lr"], train["scheduler"], train["decay_epochs"], train["seed"]) == \
        ("sgd", 5e-5, "step", 1.0, 3)
    assert (train["early_stopping"]["monitor"], train["early_stopping"]["mode"]) == ("val/accuracy", "max")
    assert summary["config"]["loss"]["name"] == "focal" and summary["monitor"] == "val/accuracy"
    engine = engines[0]
    optimizer = engine.optimizer.optimizer  # the torch optimizer inside Accelerate's wrapper
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == pytest.approx(5e-5) and optimizer.defaults["momentum"] == pytest.approx(0.8)
    assert isinstance(engine.scheduler, StepLRScheduler) and isinstance(engine.task.loss_fn, FocalLoss)
    assert engine.train_loader.total_batch_size == 4
    assert (tmp_path / "ckpt" / "checkpoint.pth.tar").is_file()
    assert Path(summary["log_dir"]).parent == tmp_path / "logs"

    resumed = config_from_cli(Config, ["--training.resume", str(tmp_path / "ckpt" / "checkpoint.pth.tar")])
    assert engine_config(resumed).resume and resumed.train.resume_checkpoint.endswith("checkpoint.pth.tar")


def test_both_spellings_of_one_key_is_an_error_and_help_lists_both(capsys):
    with pytest.raises(SystemExit, match="another name for train.lr"):
        run_cli(train_mosa.main, ["--training.learning_rate", "1e-3", "--train.lr", "1e-4"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_mosa.main, ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--train.lr " in text and "--loss.name " in text and "--training.learning-rate -> train.lr" in text


@pytest.mark.parametrize("kind, shared_transformer", [("mosa", False), ("mosa", True), ("resnet3d", False)])
def test_export_rebuilds_the_same_model(make_config, tmp_path, kind, shared_transformer):
    """A tiny model, one optimizer step, exported; shared.load_export rebuilds it with equal outputs."""
    cfg = make_config(mosa={"use_shared_transformer": shared_transformer})
    torch.manual_seed(0)
    model = (build_mosa if kind == "mosa" else build_backbone)(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(2, 1, 16, 16, 16), torch.tensor([0, 1])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    export_model(model, tmp_path / "export", project=PROJECT, architecture=architecture(cfg, kind),
                 class_names=cfg.data.class_names, task="multi-class",
                 preprocessing=export_preprocessing(cfg.data, cfg.backbone.in_channels))
    rebuilt, info = load_export(tmp_path / "export")
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model.eval()(x), atol=1e-6)
    assert type(rebuilt) is type(model) and info["class_names"] == ["CN", "AD"]


def test_training_writes_the_export_and_the_shared_results(make_config):
    cfg = make_config(train={"epochs": 1}, logging={"hist_interval": 0})
    summary = training.train(cfg, build_mosa, "mosa")
    run = Path(summary["log_dir"])
    info = json.loads((run / "export" / "model.json").read_text())
    assert (info["project"], info["task"], info["class_names"]) == (PROJECT, "multi-class", ["CN", "AD"])
    assert info["preprocessing"]["size"] == [16, 16, 16] and info["preprocessing"]["channels"] == 1
    assert info["preprocessing"]["spatial_dims"] == 3 and info["preprocessing"]["extra"]["intensity"]["method"] == "zscore"
    model, _ = load_export(run / "export")
    best = torch.load(Path(cfg.logging.checkpoint_dir) / "model_best.pth.tar", weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items())
    test = read_json(run / "results" / "test_metrics.json")
    assert test["accuracy"] == pytest.approx(summary["test"]["accuracy"])  # summary_all.json: the same numbers
    predictions = (run / "results" / "test_predictions.csv").read_text().splitlines()
    assert len(predictions) == 1 + 4 and predictions[1].split(",")[0].endswith(".nii.gz")
