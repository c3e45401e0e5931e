"""shared.evaluate on a 3D export: the volumes go through the project's own evaluation pipeline (rebuilt from
model.json), so the report's probabilities equal those of the training-time test dataset."""
import numpy as np
import pandas as pd
import pytest

from shared import DataError, read_json
from shared.evaluate import main as evaluate_main


def test_a_mosa_export_scores_the_test_folder_as_the_training_run_does(make_config, demo_root, tmp_path,
                                                                     export_tiny_mosa):
    test_set, expected = export_tiny_mosa(make_config(), tmp_path / "export")
    out = tmp_path / "report"
    evaluate_main(["--model", str(tmp_path / "export"), "--data", str(demo_root / "test"), "--out", str(out),
                   "--num_workers", "0", "--bootstrap", "50", "--positive_class", "AD", "--heatmaps", "1"])
    predictions = pd.read_csv(out / "predictions.csv").set_index("sample")
    ours = predictions.loc[test_set.sample_ids, ["prob_CN", "prob_AD"]].to_numpy()
    assert np.allclose(ours, expected, atol=1e-5)
    assert set(read_json(out / "metrics.json")["confidence_intervals"]) == {"AD"}
    assert (out / "report.html").is_file()
    right = int((predictions["true"] == predictions["predicted"]).sum())
    expected_files = ["correct_00.png"] * min(right, 1) + [f"wrong_{min(right, 1):02d}.png"] * min(len(ours) - right, 1)
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == expected_files  # three slices per case


def test_a_2d_image_given_to_the_3d_model_is_refused(make_config, demo_root, tmp_path, export_tiny_mosa):
    export_tiny_mosa(make_config(), tmp_path / "export")
    (tmp_path / "site" / "CN").mkdir(parents=True)
    (tmp_path / "site" / "CN" / "slice.png").write_bytes(b"")
    with pytest.raises(DataError, match="slice.png is a 2D image, but the model is a 3D model"):
        evaluate_main(["--model", str(tmp_path / "export"), "--data", str(tmp_path / "site"), "--out",
                       str(tmp_path / "report")])
