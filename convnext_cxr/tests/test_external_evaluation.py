"""shared.evaluate on a chest X-ray export with NIH's label CSV: the images are read as the training run's
evaluation reads them (grayscale, replicated, ImageNet-normalised), and the exported thresholds are used."""
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from convnext_cxr.model import ModelConfig, build_model, export_architecture
from shared import export_model, read_json
from shared.cxr14 import ChestXray14Dataset, cxr_preprocessing, load_records
from shared.data import build_image_transform
from shared.evaluate import main as evaluate_main


def test_a_cxr_export_scores_an_nih_csv_like_the_training_run(tiny_cxr, tmp_path):
    image_dir, csv_path = tiny_cxr
    cfg = ModelConfig(backbone="convnext_atto", pretrained=False, embed_dim=32, num_heads=2, head_hidden_dim=16,
                      drop_path_rate=0.0)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    thresholds = np.linspace(0.3, 0.6, 14)
    export_model(model, tmp_path / "export", project="convnext_cxr", architecture=export_architecture(cfg, 14),
                 class_names=list(load_records(csv_path, image_dir).findings), task="multi-label",
                 preprocessing=cxr_preprocessing(32), thresholds=thresholds)
    records = load_records(csv_path, image_dir)
    dataset = ChestXray14Dataset(records, build_image_transform(32, train=False))
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.stack([dataset[i][0] for i in range(len(dataset))]))).numpy()
    out = tmp_path / "report"
    evaluate_main(["--model", str(tmp_path / "export"), "--data", str(csv_path), "--images", str(image_dir),
                   "--out", str(out), "--num_workers", "0", "--bootstrap", "50", "--heatmaps", "1"])
    predictions = pd.read_csv(out / "predictions.csv").set_index("sample").loc[dataset.sample_ids]
    findings = list(records.findings)
    assert np.allclose(predictions[[f"prob_{f}" for f in findings]].to_numpy(), expected, atol=1e-5)
    assert len(list((out / "heatmaps").glob("*.png"))) == 2  # Grad-CAM and the spatial attention, per case
    metrics = read_json(out / "metrics.json")
    assert metrics["thresholds"] == dict(zip(findings, thresholds.tolist()))
    for c, finding in enumerate(findings):
        if len(set(records.labels[:, c])) == 2:
            auroc = roc_auc_score(records.labels[:, c], expected[:, c])
            assert abs(metrics[f"auroc/{finding}"] - auroc) < 1e-6
            assert metrics["confidence_intervals"][finding]["threshold"] == thresholds[c]
