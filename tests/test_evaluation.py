"""shared.evaluation: one evaluation path and one set of result files for every project."""
import csv
import json

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score
from torch.utils.data import TensorDataset

from shared import (EarlyStoppingConfig, Engine, MultiClassTask, MultiLabelTask, TrainConfig, evaluate_best,
                    write_split_results)

FILES = ("metrics.json", "per_class.csv", "predictions.csv", "roc.png", "pr.png", "confusion.png")


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_multilabel_files_agree_with_scikit_learn(tmp_path):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, size=(60, 3))
    probs = np.clip(0.6 * targets + 0.5 * rng.random((60, 3)), 0, 1)
    metrics = write_split_results(tmp_path, "test", task_type="multi-label", class_names=["a", "b", "c"],
                                  targets=targets, probs=probs, sample_ids=[f"img{i}.png" for i in range(60)],
                                  thresholds=np.array([0.5, 0.4, 0.6]))
    for name in FILES:
        assert (tmp_path / f"test_{name}").is_file()
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    rows = read_csv(tmp_path / "test_predictions.csv")
    assert [r["sample"] for r in rows] == [f"img{i}.png" for i in range(60)]
    probs_b = np.array([float(r["prob_b"]) for r in rows])
    true_b = np.array(["b" in r["true"].split("|") for r in rows])
    assert saved["auroc/b"] == metrics["auroc/b"]
    assert abs(saved["auroc/b"] - roc_auc_score(true_b, probs_b)) < 1e-5
    assert saved["thresholds"] == {"a": 0.5, "b": 0.4, "c": 0.6}
    per_class = read_csv(tmp_path / "test_per_class.csv")
    assert [r["class"] for r in per_class] == ["a", "b", "c"]
    assert int(per_class[0]["positives"]) == int(targets[:, 0].sum())
    assert float(per_class[1]["auroc"]) == round(metrics["auroc/b"], 6) or \
        abs(float(per_class[1]["auroc"]) - metrics["auroc/b"]) < 1e-6


def test_multiclass_and_a_one_valued_split_write_null_not_nan(tmp_path):
    targets = np.zeros(10, dtype=int)  # one class only: AUC undefined
    probs = np.tile([0.7, 0.3], (10, 1))
    write_split_results(tmp_path, "val", task_type="multi-class", class_names=["CN", "AD"], targets=targets,
                        probs=probs)
    text = (tmp_path / "val_metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["auc"] is None
    assert read_csv(tmp_path / "val_predictions.csv")[0]["predicted"] == "CN"


def toy(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long()


def test_evaluate_best_writes_every_split(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), epochs=8, batch_size=16, num_workers=0, lr=3e-2, warmup_epochs=0,
                      mixed_precision="no", progress_bar=False, tracker="none", ema=False,
                      early_stopping=EarlyStoppingConfig(monitor="val/accuracy", mode="max"))
    task = MultiClassTask(nn.CrossEntropyLoss(), ["neg", "pos"])
    splits = {name: TensorDataset(*toy(96 if name == "train" else 48, seed))
              for name, seed in (("train", 0), ("val", 1), ("test", 2))}
    engine = Engine(cfg, model, task, splits["train"], splits["val"])
    engine.fit()
    result = evaluate_best(engine, {"val": splits["val"], "test": splits["test"]})
    engine.close()
    results = tmp_path / "run" / "results"
    for split in ("val", "test"):
        for name in FILES:
            assert (results / f"{split}_{name}").is_file()
        assert len(read_csv(results / f"{split}_predictions.csv")) == 48
    saved = json.loads((results / "test_metrics.json").read_text())
    assert saved["accuracy"] == result["splits"]["test"]["accuracy"] > 0.7
    assert saved["loss"] == result["splits"]["test"]["loss"] > 0  # the task's own figures are kept
    assert result["thresholds"] is None
    assert (results / "training_curves.png").is_file()
