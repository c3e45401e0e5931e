"""The command-line entry points: train.py end to end, the benchmark, the guide's model checker."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hybridmednet import test_modern_models
from hybridmednet.benchmark import build_variant, markdown_table, measure
from hybridmednet.configs.default_config import Config
from hybridmednet.profiling import PeakTensorMemory, count_flops, count_parameters
from hybridmednet.train import build_engine, export_best, main
from shared import load_checkpoint, load_export
from shared.cxr14 import FINDINGS
from shared.testing import free_port


def test_train_main_runs_on_the_demo_set_and_reports_per_finding_auroc(tmp_path, capsys):
    save_dir = tmp_path / "run"
    overrides = {
        "MODEL.backbone": "test_convnext", "MODEL.pretrained": "false", "MODEL.fpn_channels": 32,
        "MODEL.fusion_channels": 64, "MODEL.num_heads": 4, "MODEL.hierarchical": "true",
        "train.epochs": 2, "train.batch_size": 16, "train.mixed_precision": "no", "train.warmup_epochs": 0,
        "train.ema": "true", "DATA.demo": "true", "DATA.demo_num_images": 60, "DATA.image_size": 32,
        "train.num_workers": 0, "train.output_dir": str(save_dir), "train.tracker": "none",
    }
    results = main([arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")])
    written = {split: json.loads((save_dir / "results" / f"{split}_metrics.json").read_text()) for split in ("val", "test")}
    assert set(results["splits"]) == {"val", "test"}
    assert written["val"]["macro_auroc"] == pytest.approx(results["splits"]["val"]["macro_auroc"])
    assert all(f"auroc/{name}" in written["val"] for name in FINDINGS)
    history = json.loads((save_dir / "history.json").read_text())
    assert "val/coarse/macro_auroc" in history[-1]  # the hierarchical head's coarse metrics, every epoch
    for name in ("checkpoints/checkpoint_latest.pth", "checkpoints/checkpoint_best_ema.pth", "config.yaml",
                 "history.json", "results/val_roc.png", "results/test_per_class.csv", "results/training_curves.png",
                 "export/model.json", "export/model.safetensors"):
        assert (save_dir / name).is_file(), name
    assert Config.load(save_dir / "config.yaml").MODEL["hierarchical"] is True  # the saved config reloads
    assert "validation AUROC" in capsys.readouterr().out
    # shared.evaluate on the demo CSV: the export gives the test split the probabilities training wrote
    from shared.evaluate import main as evaluate_main
    csv_path, = (save_dir / "demo_data").rglob("*.csv")
    evaluate_main(["--model", str(save_dir / "export"), "--data", str(csv_path), "--images", str(csv_path.parent),
                   "--out", str(tmp_path / "report"), "--num_workers", "0", "--bootstrap", "50"])
    trained = pd.read_csv(save_dir / "results" / "test_predictions.csv").set_index("sample")
    external = pd.read_csv(tmp_path / "report" / "predictions.csv").set_index("sample").loc[trained.index]
    columns = [f"prob_{name}" for name in FINDINGS]
    assert np.allclose(external[columns].to_numpy(), trained[columns].to_numpy(), atol=1e-5)


def test_the_guides_command_line_reaches_the_engine(tmp_path):
    """``python train.py`` with the guide's settings (its MODEL / TRAIN / DATA dicts) as flags."""
    guide = ["--MODEL.backbone", "test_convnext", "--MODEL.pretrained", "false", "--MODEL.use_modern_attention",
             "--MODEL.use_cross_scale_attention", "--MODEL.num_heads", "4", "--TRAIN.batch_size", "16",
             "--TRAIN.learning_rate", "2e-3", "--TRAIN.lr_scheduler", "cosine", "--TRAIN.warmup_epochs", "1",
             "--TRAIN.gradient_accumulation_steps", "2", "--TRAIN.epochs", "1", "--DATA.num_workers", "0",
             "--DATA.use_albumentations"]
    sizing = ["--MODEL.fpn_channels", "32", "--MODEL.fusion_channels", "64", "--DATA.demo", "--DATA.demo_num_images",
              "60", "--DATA.image_size", "32", "--TRAIN.mixed_precision", "no", "--TRAIN.tracker", "none",
              "--TRAIN.output_dir", str(tmp_path)]
    main(guide + sizing)
    state = load_checkpoint(tmp_path / "checkpoints" / "checkpoint_latest.pth")
    train = state["config"]["train"]
    assert (train["batch_size"], train["lr"], train["scheduler"], train["warmup_epochs"]) == (16, 2e-3, "cosine", 1.0)
    assert (train["grad_accum_steps"], train["epochs"], train["num_workers"]) == (2, 1, 0)
    assert state["config"]["DATA"]["use_albumentations"] is True and state["config"]["MODEL"]["num_heads"] == 4
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(2e-3)
    assert state["global_step"] >= 1 and len(state["history"]) == 1


def test_export_rebuilds_the_trained_model(make_config, tiny_dataset, tmp_path):
    """export/ alone rebuilds the trained network: same outputs, plus class names, thresholds, preprocessing."""
    config = make_config(train={"epochs": 1, "batch_size": 4, "limit_train_batches": 1})
    engine = build_engine(config, tiny_dataset, None, tiny_dataset.tensors[1].numpy())
    engine.fit()
    export_best(engine, config, thresholds=np.linspace(0.2, 0.8, 14))
    engine.close()
    exported, info = load_export(engine.output_dir / "export")
    trained = engine.accelerator.unwrap_model(engine.model).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(exported(images), trained(images))
    assert info["project"] == "hybridmednet" and info["task"] == "multi-label" and info["class_names"] == list(FINDINGS)
    assert info["thresholds"] == pytest.approx(np.linspace(0.2, 0.8, 14).tolist())
    assert info["preprocessing"]["size"] == [32, 32] and info["architecture"]["backbone"] == "test_convnext"


def test_benchmark_row_matches_direct_measurements():
    row = measure("test_convnext", "mhsa+cross", image_size=64, repeats=1, device=torch.device("cpu"))
    model = build_variant("test_convnext", "mhsa+cross").eval()
    assert row.params_m * 1e6 == count_parameters(model)
    assert row.gflops * 1e9 == count_flops(model, torch.randn(1, 3, 64, 64))
    assert row.latency_ms > 0 and row.peak_memory_mb > 0
    assert "| test_convnext | mhsa+cross |" in markdown_table([row], 64, "a test machine")


def test_peak_tensor_memory_counts_live_storages_once():
    weight = torch.empty(10_000)
    with PeakTensorMemory() as tracker:
        weight_t = weight.view(100, 100).t()  # views of a tensor made before entering: free
        a = torch.empty(1000)          # 4,000 bytes
        view = a[:10]                  # a view: same storage, not counted again
        del a, view                    # freed
        b = torch.empty(500)           # 2,000 bytes: the peak stays 4,000
        c = b + 1                      # 2,000 more: current 4,000
    assert tracker.peak == 4000 and weight_t.shape == (100, 100)


def test_model_checker_reports_every_attention_setting(capsys):
    assert test_modern_models.main(["--backbones", "test_convnext", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok (forward + backward)") == 4 and "0 of 4 combinations failed" in out


LAUNCHER = '''
import sys
from hybridmednet.models.backbones import BACKBONES, BackboneSpec, TimmFeatures
from hybridmednet.train import main
BACKBONES["test_convnext"] = BackboneSpec(TimmFeatures, {"model_name": "test_convnext"})
main(sys.argv[1:])
'''


def test_two_process_gloo_run_is_one_run_with_one_report(tmp_path):
    """torchrun with 2 CPU processes (what ``accelerate launch`` starts): one gloo group, not two lone runs
    writing the same folder; the global batch is split over both processes and only one of them reports."""
    launcher = tmp_path / "launch_hybridmednet.py"
    launcher.write_text(LAUNCHER)
    save_dir = tmp_path / "run"
    overrides = {
        "MODEL.backbone": "test_convnext", "MODEL.pretrained": "false", "MODEL.fpn_channels": 32,
        "MODEL.fusion_channels": 64, "MODEL.num_heads": 4, "train.epochs": 2, "train.batch_size": 16,
        "train.mixed_precision": "no", "train.warmup_epochs": 0, "DATA.demo": "true",
        "DATA.demo_num_images": 60, "DATA.image_size": 32, "train.num_workers": 0,
        "train.output_dir": str(save_dir), "train.tracker": "none",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(launcher), *[arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on 2 processes" in proc.stdout
    assert proc.stdout.count("validation AUROC") == 1  # the main process alone reports
    latest = load_checkpoint(save_dir / "checkpoints" / "checkpoint_latest.pth")
    train_images = int(proc.stdout.split(" train / ")[0].rsplit(" ", 1)[-1])
    assert latest["global_step"] == 2 * (train_images // 16)  # global batch 16 = 2 x 8 per step, last partial dropped
    assert latest["class_names"] == list(FINDINGS)
