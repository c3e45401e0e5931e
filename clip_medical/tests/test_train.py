import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared import CheckpointError, ConfigError, load_checkpoint, load_export, read_json, write_json
from shared.cli import config_keys
from shared.testing import free_port
from clip_medical import train_clip
from clip_medical.config import ALIASES, ClipTrainConfig, entry_config, read_config_file
from clip_medical.demo import write_demo_images
from clip_medical.predict import main as predict_main
from clip_medical.task import ZeroShotCLIPTask

GUIDE_KEYS = {"image_encoder_name", "text_encoder_name", "embed_dim", "batch_size", "epochs", "learning_rate",
              "weight_decay", "temperature", "img_size", "augmentation", "num_workers", "use_amp", "gpu_id",
              "save_best", "use_cv", "n_splits", "early_stopping_patience", "early_stopping_min_delta",
              "early_stopping_monitor", "text_template", "class_texts_file"}


def column(history, key):
    """One metric over the epochs of the engine's history.json (a list of per-epoch dicts)."""
    return [epoch[key] for epoch in history]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, data_dir, text_encoder_dir, class_texts_file):
    out = tmp_path_factory.mktemp("single")
    # a held-out set of other images: the training folder itself would be refused as a leaked split
    test_dir = write_demo_images(tmp_path_factory.mktemp("test") / "images", [p.name for p in sorted(data_dir.iterdir())],
                                 images_per_class=4, size=32, seed=1)
    argv = ["--data-dir", str(data_dir), "--output-dir", str(out), "--text-encoder", str(text_encoder_dir),
            "--class-texts-file", str(class_texts_file), "--embed-dim", "16", "--batch-size", "6", "--epochs", "2",
            "--img-size", "32", "--num-workers", "0", "--no-pretrained", "--learning-rate", "1e-3",
            "--test-dir", str(test_dir)]
    return out, train_clip.main(argv)


def test_single_run_writes_the_guides_outputs(single_run, class_texts):
    out, summary = single_run
    for name in ("config.json", "checkpoint_latest.pth", "checkpoint_best.pth", "history.json", "class_texts.json",
                 "best_model_metrics.json", "results/training_curves.png", "results/val_metrics.json",
                 "results/val_per_class.csv", "results/val_predictions.csv", "results/val_confusion.png",
                 "results/val_roc.png", "results/test_metrics.json", "export/model.json", "export/model.safetensors"):
        assert (out / name).is_file(), name
    saved_keys = {key for key, *_ in config_keys(train_clip.parse_args(["--config", str(out / "config.json")]))}
    for key in GUIDE_KEYS:  # every guide key has its one place in config.json
        target = ALIASES.get(key, key)
        assert (target[True] if isinstance(target, dict) else target).split("=")[0] in saved_keys, key
    history = read_json(out / "history.json")
    for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert len(column(history, key)) == 2 and all(np.isfinite(column(history, key)))
    assert all(0 <= acc <= 100 for acc in column(history, "val/acc") + column(history, "train/acc"))
    assert column(history, "epoch") == [1, 2] and summary["epochs_trained"] == 2
    assert summary["best_val_acc"] == max(column(history, "val/acc"))
    predictions = (out / "results" / "val_predictions.csv").read_text(encoding="utf-8").splitlines()
    assert predictions[0] == "sample,true,predicted,prob_正常,prob_肺炎"
    assert len(predictions) == 1 + 4 and predictions[1].split(",")[0].endswith(".png")

    checkpoint = load_checkpoint(out / "checkpoint_latest.pth")
    assert checkpoint["class_names"] == ["正常", "肺炎"] and checkpoint["class_to_idx"] == {"正常": 0, "肺炎": 1}
    assert checkpoint["class_texts"] == class_texts
    assert {"model", "optimizer", "scheduler", "history"} <= set(checkpoint)
    report = read_json(out / "best_model_metrics.json")
    assert set(report["per_class"]["肺炎"]) == {"precision", "recall", "f1", "auc", "specificity"}
    assert np.array(report["confusion_matrix"]).sum() == 4  # 20% of 18 images
    assert report["model"].startswith("best checkpoint")
    assert report["accuracy"] == read_json(out / "results" / "val_metrics.json")["accuracy"]
    assert report["acc"] == pytest.approx(100 * report["accuracy"])
    _, info = load_export(out / "export")
    assert info["task"] == "zero-shot" and info["class_names"] == ["正常", "肺炎"]
    assert info["extra"]["class_texts"] == class_texts and info["preprocessing"]["size"] == [32, 32]


def test_predict_uses_trained_or_new_class_texts(single_run, data_dir, tmp_path):
    out, _ = single_run
    table = predict_main(["--export", str(out / "export"), "--images", str(data_dir),
                          "--output", str(tmp_path / "p.csv")])
    assert len(table) == 18 and set(table["predicted"]) <= {"正常", "肺炎"}
    np.testing.assert_allclose(table[["prob_正常", "prob_肺炎"]].sum(axis=1), 1.0, rtol=1e-5)
    assert (tmp_path / "p.csv").is_file()
    new = predict_main(["--export", str(out), "--images", str(data_dir / "肺炎" / "000.png"),
                        "--class-text.正常", "正常胸部", "--class-text.异常", "显示病变的胸部", "--class-text.肺炎", "肺炎"])
    assert list(new.columns) == ["path", "predicted", "prob_正常", "prob_异常", "prob_肺炎"]


def test_resume_continues_epochs_and_history(train_argv, tmp_path):
    out = tmp_path / "run"
    train_clip.main(train_argv(out, "--epochs", "1"))
    first = load_checkpoint(out / "checkpoint_latest.pth")
    summary = train_clip.main(train_argv(out, "--epochs", "3", "--resume-from", str(out / "checkpoint_latest.pth")))
    history = read_json(out / "history.json")
    assert column(history, "epoch") == [1, 2, 3] and summary["epochs_trained"] == 3
    assert history[0]["train/loss"] == pytest.approx(first["history"][0]["train/loss"])
    resumed = load_checkpoint(out / "checkpoint_latest.pth")
    assert resumed["epoch"] == 3 and resumed["global_step"] == 3 * first["global_step"]


def test_resume_with_mismatched_model_or_classes_is_refused(train_argv, tmp_path, data_dir):
    out = tmp_path / "run"
    train_clip.main(train_argv(out))
    latest = str(out / "checkpoint_latest.pth")
    with pytest.raises(CheckpointError, match="does not match the model"):
        train_clip.main(train_argv(tmp_path / "other", "--epochs", "2", "--image-encoder", "resnet18",
                                   "--resume-from", latest))
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for name, new in (("正常", "normal"), ("肺炎", "pneumonia")):
        (renamed / new).symlink_to(data_dir / name)
    argv = train_argv(tmp_path / "other2", "--epochs", "2", "--resume-from", latest)
    argv[argv.index("--class-texts-file"):argv.index("--class-texts-file") + 2] = []
    argv[argv.index("--data-dir") + 1] = str(renamed)
    with pytest.raises(CheckpointError, match=r"trained on classes \['正常', '肺炎'\]"):
        train_clip.main(argv)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        train_clip.main(train_argv(tmp_path / "x", "--resume-from", str(tmp_path / "nope.pth")))


def test_no_save_best_writes_only_the_latest_checkpoint(train_argv, tmp_path):
    train_clip.main(train_argv(tmp_path, "--no-save-best"))
    assert (tmp_path / "checkpoint_latest.pth").is_file() and not (tmp_path / "checkpoint_best.pth").exists()
    assert read_json(tmp_path / "best_model_metrics.json")["model"].startswith("final model")
    assert (tmp_path / "export" / "model.safetensors").is_file()


def test_cross_validation_writes_folds_and_mean_std(train_argv, tmp_path):
    summary = train_clip.main(train_argv(tmp_path, "--use-cv", "--n-splits", "3", "--augmentation", "none"))
    assert sorted(p.name for p in tmp_path.glob("fold_*")) == ["fold_1", "fold_2", "fold_3"]
    for fold in range(1, 4):
        assert (tmp_path / f"fold_{fold}" / "checkpoint_best.pth").is_file()
    saved = read_json(tmp_path / "cv_summary.json")
    assert saved["n_splits"] == 3 and [f["fold"] for f in saved["folds"]] == [1, 2, 3]
    val_acc = [read_json(tmp_path / f"fold_{k}" / "history.json")[-1]["val/acc"] for k in (1, 2, 3)]
    assert saved["mean"]["val_acc"] == pytest.approx(np.mean(val_acc))
    assert saved["std"]["val_acc"] == pytest.approx(np.std(val_acc))
    assert saved["mean_std"]["val_acc"] == f"{np.mean(val_acc):.4f} ± {np.std(val_acc):.4f}"
    assert summary["mean"] == saved["mean"]
    assert sum(fold["best_model_val_acc"] >= 0 for fold in saved["folds"]) == 3
    config_before = (tmp_path / "config.json").read_bytes()
    with pytest.raises(ConfigError, match=r"not starting a new run .*a run is already there \(.*fold_1"):
        train_clip.main(train_argv(tmp_path, "--use-cv", "--n-splits", "3", "--learning-rate", "5e-4"))
    assert (tmp_path / "config.json").read_bytes() == config_before  # refused before anything was written


def test_multi_config_trains_each_entry_into_its_own_folder(train_argv, tmp_path, class_texts_file):
    config_file = write_json(tmp_path / "configs.json", [
        {"image_encoder_name": "starnet_dual_pyramid_rcf", "text_template": "一张{class_name}的X光图像",
         "class_texts_file": None},
        {"image_encoder_name": "resnet18", "class_texts_file": str(class_texts_file), "augmentation": "minimal"},
    ])
    out = tmp_path / "multi"
    results = train_clip.main(train_argv(out, "--multi-config", "--config-file", str(config_file)))
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(results) == 2
    assert folders[0].startswith("01_starnet_dual_pyramid_rcf") and folders[1].startswith("02_resnet18")
    first, second = (out / name for name in folders)
    assert read_json(first / "class_texts.json") == {"正常": "一张正常的X光图像", "肺炎": "一张肺炎的X光图像"}
    assert read_json(second / "config.json")["augmentation"] == "minimal"
    assert load_checkpoint(second / "checkpoint_best.pth")["config"]["image_encoder_name"] == "resnet18"
    assert len(read_json(out / "multi_config_summary.json")) == 2


def test_multi_config_rejects_unknown_keys_before_training(train_argv, tmp_path):
    config_file = write_json(tmp_path / "configs.json", [{"image_encoder_name": "resnet18"}, {"learnig_rate": 1e-3}])
    with pytest.raises(ConfigError, match="entry 2: unknown config key.*learnig_rate"):
        train_clip.main(train_argv(tmp_path / "m", "--multi-config", "--config-file", str(config_file)))
    assert not (tmp_path / "m").exists()


def scripted_metrics(monkeypatch, key, values):
    """Replace the validation ``key`` by ``values`` epoch after epoch (the engine's check of the monitor key
    before training calls compute_metrics once first)."""
    sequence = iter([values[0], *values])
    real = ZeroShotCLIPTask.compute_metrics

    def compute_metrics(self, outputs):
        return {**real(self, outputs), key: next(sequence)}
    monkeypatch.setattr(ZeroShotCLIPTask, "compute_metrics", compute_metrics)


@pytest.mark.parametrize("monitor, key, values, stop_epoch", [
    # improvements must exceed min_delta 0.1: 60.05 and 60.1 do not beat 60, so 2 bad epochs follow 60
    ("val_acc", "acc", [50, 60, 60.05, 60.1, 99, 99], 4),
    ("val_loss", "loss", [1.0, 0.8, 0.75, 0.5, 0.45, 0.41, 0.3], 6),
])
def test_early_stopping_after_patience_epochs_without_min_delta_improvement(
        monitor, key, values, stop_epoch, monkeypatch, train_argv, tmp_path):
    # each epoch is evaluated once more for the best-model report, hence the extra value
    scripted_metrics(monkeypatch, key, values + [0.0])
    summary = train_clip.main(train_argv(tmp_path, "--epochs", str(len(values)), "--early-stopping-patience", "2",
                                         "--early-stopping-min-delta", "0.1", "--early-stopping-monitor", monitor))
    assert summary["epochs_trained"] == stop_epoch
    assert column(read_json(tmp_path / "history.json"), f"val/{key}") == values[:stop_epoch]


def test_bad_options_are_rejected_with_the_option_name(train_argv, tmp_path):
    with pytest.raises(ConfigError, match="image_encoder_name: 'resnet19' is not one of"):
        train_clip.main(train_argv(tmp_path, "--image-encoder", "resnet19"))
    with pytest.raises(ValueError, match="--early-stopping-patience must be >= 0"):
        train_clip.main(train_argv(tmp_path, "--early-stopping-patience", "-1"))
    with pytest.raises(ValueError, match="with --use-cv start the folds afresh"):
        train_clip.main(train_argv(tmp_path, "--use-cv", "--resume-from", "x.pth"))
    with pytest.raises(ConfigError, match="needs --config-file"):
        train_clip.main(train_argv(tmp_path, "--multi-config"))


def test_gpu_id_narrows_visible_devices_unless_launched(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    train_clip.select_gpu(1)
    assert train_clip.os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    with pytest.raises(ValueError, match="only 1 device"):
        train_clip.select_gpu(2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv("LOCAL_RANK", "0")
    train_clip.select_gpu(1)
    assert train_clip.os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"


def test_config_defaults_match_the_guide():
    cfg = train_clip.parse_args(["--data-dir", "d", "--output-dir", "o"])
    train, stop = cfg.train, cfg.train.early_stopping
    assert (cfg.image_encoder_name, cfg.text_encoder_name, cfg.embed_dim, cfg.temperature, train.batch_size,
            train.epochs, train.lr, train.weight_decay, cfg.img_size, cfg.augmentation, train.num_workers,
            cfg.gpu_id, train.mixed_precision, train.save_best, cfg.n_splits, train.seed, stop.patience,
            stop.min_delta, stop.monitor, stop.mode, train.optimizer, train.ema) == (
        "starnet_dual_pyramid_rcf", "bert-base-chinese", 512, 0.07, 32, 100, 1e-4, 0.01, 224, "standard", 4,
        0, "auto", True, 5, 42, 0, 0.0, "val/acc", "max", "adamw", False)


def test_every_setting_has_a_meaning_for_help(capsys):
    assert all(meaning for *_, meaning in config_keys(ClipTrainConfig()))
    with pytest.raises(SystemExit):
        train_clip.main(["--help"])
    shown = capsys.readouterr().out
    assert "--train.lr" in shown and "--learning-rate -> train.lr" in shown and "--no-amp -> train.mixed_precision=no" in shown


def test_example_config_file_entries_are_valid():
    base = train_clip.parse_args(["--data-dir", "d", "--output-dir", "o", "--no-amp", "--early-stopping-patience", "5"])
    entries = read_config_file(str(Path(train_clip.__file__).parent / "train_clip_config.json"))
    configs = [entry_config(base, entry, index) for index, entry in enumerate(entries, 1)]
    assert [c.image_encoder_name for c in configs] == ["starnet_dual_pyramid_rcf", "resnet50"]
    assert configs[1].text_template == "这是一张{class_name}的医学图像"
    assert [c.train.output_dir for c in configs] == ["o/01_starnet_dual_pyramid_rcf_bert-base-chinese",
                                                     "o/02_resnet50_bert-base-chinese"]
    # "use_amp": true and "early_stopping_patience": null override the command line's --no-amp and 5
    assert (configs[0].train.mixed_precision, configs[0].train.early_stopping.patience) == ("auto", 0)
    assert (configs[1].train.mixed_precision, configs[1].train.early_stopping.patience) == ("no", 30)
    assert configs[0].train.early_stopping.min_delta == 0.1 and configs[0].train.lr == 1e-4
    assert entry_config(base, {"use_amp": False, "learning_rate": 3e-4}, 3).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="entry 4: .*train.lr"):
        entry_config(base, {"learning_rate": 3e-4, "train": {"lr": 1e-3}}, 4)


def test_the_guides_command_line_reaches_the_config_and_the_optimizer(monkeypatch, tmp_path, data_dir,
                                                                       text_encoder_dir, class_texts_file):
    engines = []

    class RecordingEngine(train_clip.Engine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            engines.append(self)
    monkeypatch.setattr(train_clip, "Engine", RecordingEngine)
    out = tmp_path / "cv"
    # the guide's flags, spelled as in its examples (plus the tiny sizes and the offline text encoder)
    summary = train_clip.main([
        "--data-dir", str(data_dir), "--output-dir", str(out), "--image-encoder", "resnet18",
        "--text-encoder", str(text_encoder_dir), "--class-texts-file", str(class_texts_file), "--embed-dim", "16",
        "--temperature", "0.05", "--batch-size", "6", "--epochs", "1", "--learning-rate", "1e-4",
        "--weight-decay", "0.02", "--img-size", "32", "--augmentation", "minimal", "--num-workers", "0",
        "--gpu-id", "0", "--no-amp", "--no-save-best", "--use-cv", "--n-splits", "2", "--random-state", "7",
        "--early-stopping-patience", "30", "--early-stopping-min-delta", "0.1", "--early-stopping-monitor",
        "val_loss", "--no-pretrained"])
    assert len(engines) == 2 and summary["n_splits"] == 2 and (out / "cv_summary.json").is_file()
    for engine in engines:
        groups = engine.optimizer.param_groups
        assert {group["initial_lr"] for group in groups} == {1e-4}  # --learning-rate, one hop: train.lr
        assert max(group["weight_decay"] for group in groups) == 0.02
        assert engine.accelerator.mixed_precision == "no"
        stop = engine.cfg.early_stopping
        assert (stop.monitor, stop.mode, stop.patience, stop.min_delta) == ("val/loss", "min", 30, 0.1)
        assert (engine.cfg.seed, engine.cfg.save_best, engine.cfg.batch_size, engine.cfg.epochs) == (7, False, 6, 1)
    saved = read_json(out / "config.json")
    assert (saved["image_encoder_name"], saved["embed_dim"], saved["temperature"], saved["img_size"],
            saved["augmentation"], saved["use_cv"], saved["n_splits"], saved["pretrained"]) == (
        "resnet18", 16, 0.05, 32, "minimal", True, 2, False)
    assert (saved["train"]["lr"], saved["train"]["mixed_precision"], saved["train"]["num_workers"]) == (1e-4, "no", 0)


def test_two_process_ddp_run_keeps_the_global_batch_and_gathers_each_val_image_once(train_argv, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(Path(train_clip.__file__)), *train_argv(out, "--epochs", "2")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # global batch 6 = 2 processes x 3: 14 training images give 2 optimizer steps per epoch, as on one process
    assert load_checkpoint(out / "checkpoint_latest.pth")["global_step"] == 4
    assert np.array(read_json(out / "best_model_metrics.json")["confusion_matrix"]).sum() == 4


def test_the_export_scores_the_held_out_folder_as_the_training_run_did(single_run, tmp_path):
    """shared.evaluate on --test-dir: the zero-shot export (class-text embeddings inside) gives the
    probabilities the training run's own test evaluation wrote."""
    from shared.evaluate import main as evaluate_main
    out, _ = single_run
    trained = pd.read_csv(out / "results" / "test_predictions.csv").set_index("sample")
    test_dir = Path(trained.index[0]).parent.parent
    evaluate_main(["--model", str(out / "export"), "--data", str(test_dir), "--out", str(tmp_path / "report"),
                   "--num_workers", "0", "--bootstrap", "50"])
    external = pd.read_csv(tmp_path / "report" / "predictions.csv").set_index("sample").loc[trained.index]
    columns = [c for c in trained.columns if c.startswith("prob_")]
    assert np.allclose(external[columns].to_numpy(), trained[columns].to_numpy(), atol=1e-5)
    assert (external["true"] == trained["true"]).all()
