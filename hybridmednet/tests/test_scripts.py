"""The command-line entry points: train.py end to end, the benchmark, the guide's model checker."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from hybridmednet import test_modern_models
from hybridmednet.benchmark import build_variant, markdown_table, measure
from hybridmednet.configs.default_config import Config
from hybridmednet.profiling import PeakTensorMemory, count_flops, count_parameters
from hybridmednet.train import main
from shared import load_checkpoint
from shared.cxr14 import FINDINGS
from shared.testing import free_port


def test_train_main_runs_on_the_demo_set_and_reports_per_finding_auroc(tmp_path, capsys):
    save_dir = tmp_path / "run"
    overrides = {
        "MODEL.backbone": "test_convnext", "MODEL.pretrained": "false", "MODEL.fpn_channels": 32,
        "MODEL.fusion_channels": 64, "MODEL.num_heads": 4, "MODEL.hierarchical": "true",
        "TRAIN.epochs": 2, "TRAIN.batch_size": 16, "TRAIN.mixed_precision": "false", "TRAIN.warmup_epochs": 0,
        "TRAIN.ema": "true", "DATA.demo": "true", "DATA.demo_num_images": 60, "DATA.image_size": 32,
        "DATA.num_workers": 0, "CHECKPOINT.save_dir": str(save_dir), "LOGGING.tensorboard": "false",
    }
    results = main([arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")])
    written = json.loads((save_dir / "final_metrics.json").read_text())
    assert set(written) == {"val", "test"}
    assert written["val"]["macro_auroc"] == results["val"]["macro_auroc"]
    assert all(f"auroc/{name}" in written["val"] for name in FINDINGS) and "coarse/macro_auroc" in written["val"]
    for name in ("checkpoints/checkpoint_latest.pth", "checkpoints/checkpoint_best_ema.pth", "config.yaml",
                 "history.json", "roc_val.png", "training_curves.png"):
        assert (save_dir / name).is_file(), name
    assert Config.load(save_dir / "config.yaml").MODEL["hierarchical"] is True  # the saved config reloads
    assert "validation AUROC" in capsys.readouterr().out


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
        "MODEL.fusion_channels": 64, "MODEL.num_heads": 4, "TRAIN.epochs": 2, "TRAIN.batch_size": 16,
        "TRAIN.mixed_precision": "false", "TRAIN.warmup_epochs": 0, "DATA.demo": "true",
        "DATA.demo_num_images": 60, "DATA.image_size": 32, "DATA.num_workers": 0,
        "CHECKPOINT.save_dir": str(save_dir), "LOGGING.tensorboard": "false",
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
