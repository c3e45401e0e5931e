"""python -m shared.evaluate: an export scored on labelled data it never saw, with intervals and a report."""
import base64
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from shared import DataError, Preprocessing, export_model, read_json
from shared.evaluate import main as evaluate_main
from shared.testing import free_port

TOY = '''
import torch
import torch.nn as nn
from shared import register_model


class Brightness(nn.Module):
    """Logit of "bright" grows with the image's mean intensity: a model with a known, imperfect AUROC."""

    def __init__(self, architecture):
        super().__init__()
        self.features = nn.Conv2d(3, 3, 1)  # identity weights below: a feature map for Grad-CAM
        self.head = nn.Linear(3, architecture.get("classes", 2))

    def forward(self, x):  # (N, 3, H, W) -> (N, 2)
        return self.head(self.features(x).mean(dim=(2, 3)))


@register_model("evaltoy")
def build(architecture):
    return Brightness(architecture)
'''


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory):
    """An export of the brightness model, its module importable by subprocesses through PYTHONPATH."""
    root = tmp_path_factory.mktemp("toy")
    (root / "evaltoy.py").write_text(TOY)
    sys.path.insert(0, str(root))
    import evaltoy
    model = evaltoy.build({})
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
        model.head.bias.zero_()
        model.features.weight.copy_(torch.eye(3)[:, :, None, None])
        model.features.bias.zero_()
    export_model(model, root / "export", project="evaltoy", architecture={}, class_names=["dark", "bright"],
                 task="multi-class", preprocessing=Preprocessing(size=(16, 16)))
    return root


def write_site(root, n=40, seed=0):
    """A class-folder site whose two classes overlap in brightness (the model's AUROC is high, not 1)."""
    rng = np.random.default_rng(seed)
    for name, level in (("dark", 110), ("bright", 145)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            value = np.clip(rng.normal(level, 20), 0, 255)
            pixels = np.clip(value + rng.normal(0, 5, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def test_the_report_holds_every_file_and_its_auroc_is_sklearns_on_the_predictions(toy_export, tmp_path):
    site = write_site(tmp_path / "site")
    out = tmp_path / "report"
    metrics = evaluate_main(["--model", str(toy_export / "export"), "--data", str(site), "--out", str(out),
                             "--num_workers", "0", "--bootstrap", "300", "--heatmaps", "2"])
    for name in ("metrics.json", "per_class.csv", "predictions.csv", "roc.png", "pr.png", "roc_bands.png",
                 "pr_bands.png", "reliability.png", "confusion.png", "confusion_youden.png", "report.html"):
        assert (out / name).is_file(), name
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 80 and predictions["sample"].is_unique
    truth = (predictions["true"] == "bright").astype(int)
    expected = roc_auc_score(truth, predictions["prob_bright"])
    saved = read_json(out / "metrics.json")
    assert saved["auc"] == pytest.approx(expected, abs=1e-12) and saved["auc"] == metrics["auc"]
    assert 0.7 < expected < 1.0
    bright = saved["confidence_intervals"]["bright"]
    delong, boot = bright["auroc_delong"], bright["auroc_bootstrap"]
    assert delong[0] == pytest.approx(expected, abs=1e-6)
    assert delong[1] < expected < delong[2] and boot[1] < expected < boot[2]
    for key in ("sensitivity", "specificity", "accuracy", "f1"):
        point, low, high = bright["at_threshold"][key]
        assert low <= point <= high
    assert 0 <= bright["calibration"]["ece"] <= 1 and 0 <= bright["calibration"]["brier"] <= 1
    page = (out / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 7 + 4 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == ["correct_00.png", "correct_01.png",
                                                                    "wrong_02.png", "wrong_03.png"]
    assert "http://" not in page and "https://" not in page and "<script" not in page  # nothing from a network


@pytest.mark.parametrize("case", ["unknown label", "3D volume", "unreadable", "empty"])
def test_bad_input_is_one_line_and_leaves_no_report(toy_export, tmp_path, case):
    site = write_site(tmp_path / "site", n=3)
    if case == "unknown label":
        (site / "grey").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(site / "grey" / "x.png")
        message = r"label\(s\) \['grey'\] are not among the model's classes \['dark', 'bright'\]"
    elif case == "3D volume":
        (site / "dark" / "brain.nii.gz").write_bytes(b"")
        message = r"brain.nii.gz is a 3D volume, but the model is a 2D model"
    elif case == "unreadable":
        (site / "dark" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        message = r"1 of 6 files cannot be read, e.g. cannot read image .*dark/001.png"
    else:
        site = tmp_path / "empty"
        site.mkdir()
        message = r"no class folders in .*empty"
    out = tmp_path / "report"
    with pytest.raises(DataError, match=message):
        evaluate_main(["--model", str(toy_export / "export"), "--data", str(site), "--out", str(out),
                       "--num_workers", "0", "--bootstrap", "50"])
    assert not out.exists()


def test_two_processes_score_each_sample_exactly_once(toy_export, tmp_path):
    site = write_site(tmp_path / "site", n=9)  # 18 samples: not a multiple of 2 x batch 4
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(toy_export), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", "--main_process_port", str(free_port()),
               "-m", "shared.evaluate", "--model", str(toy_export / "export"), "--data", str(site), "--out", str(out),
               "--batch_size", "4", "--num_workers", "0", "--bootstrap", "50", "--cpu", "true"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 18 and predictions["sample"].is_unique
    single = tmp_path / "single"
    evaluate_main(["--model", str(toy_export / "export"), "--data", str(site), "--out", str(single),
                   "--num_workers", "0", "--bootstrap", "50"])
    alone = pd.read_csv(single / "predictions.csv")
    assert np.allclose(predictions["prob_bright"], alone["prob_bright"], atol=1e-6)


def test_more_than_two_classes_get_one_vs_rest_intervals(toy_export, tmp_path):
    """Three classes: every class has its AUROC with DeLong and bootstrap intervals, one against the rest."""
    import evaltoy
    model = evaltoy.build({"classes": 3})
    with torch.no_grad():
        model.features.weight.copy_(torch.eye(3)[:, :, None, None])
        model.features.bias.zero_()
        model.head.weight.copy_(torch.tensor([[-2.0] * 3, [0.0] * 3, [2.0] * 3]))
        model.head.bias.copy_(torch.tensor([0.0, 0.5, 0.0]))
    export_model(model, tmp_path / "export", project="evaltoy", architecture={"classes": 3},
                 class_names=["dark", "mid", "bright"], task="multi-class", preprocessing=Preprocessing(size=(16, 16)))
    site = write_site(tmp_path / "site", n=20)
    (site / "mid").mkdir()
    for i in range(20):
        Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(site / "mid" / f"{i:03d}.png")
    evaluate_main(["--model", str(tmp_path / "export"), "--data", str(site), "--out", str(tmp_path / "report"),
                   "--num_workers", "0", "--bootstrap", "100"])
    saved = read_json(tmp_path / "report" / "metrics.json")
    predictions = pd.read_csv(tmp_path / "report" / "predictions.csv")
    assert set(saved["confidence_intervals"]) == {"dark", "mid", "bright"}
    for name in ("dark", "mid", "bright"):
        expected = roc_auc_score(predictions["true"] == name, predictions[f"prob_{name}"])
        assert saved["confidence_intervals"][name]["auroc_delong"][0] == pytest.approx(expected, abs=1e-12)
    assert "one class against the rest" in (tmp_path / "report" / "report.html").read_text()
