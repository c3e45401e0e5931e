"""shared.export: one format for every project, rebuilt without unpickling."""
import json

import pytest
import torch
import torch.nn as nn

from shared import CheckpointError, Preprocessing, export_model, load_export, read_export_info, register_model


@register_model("test_tiny")
def build_tiny(architecture):
    return nn.Sequential(nn.Linear(architecture["inputs"], architecture["hidden"]), nn.ReLU(),
                         nn.Linear(architecture["hidden"], 2))


def test_round_trip_gives_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_tiny({"inputs": 4, "hidden": 8})
    export_model(model, tmp_path / "export", project="test_tiny", architecture={"inputs": 4, "hidden": 8},
                 class_names=["CN", "AD"], task="multi-class",
                 preprocessing=Preprocessing(size=(8, 8, 8), channels=1, mean=(0.0,), std=(1.0,), spatial_dims=3),
                 thresholds=None)
    rebuilt, info = load_export(tmp_path / "export")
    x = torch.randn(5, 4)
    assert torch.equal(rebuilt(x), model(x))
    assert not rebuilt.training
    assert info["class_names"] == ["CN", "AD"] and info["task"] == "multi-class"
    assert info["preprocessing"]["size"] == [8, 8, 8] and info["preprocessing"]["spatial_dims"] == 3
    assert info["builder_module"] == __name__
    assert read_export_info(tmp_path / "export")["project"] == "test_tiny"


def test_mismatched_weights_and_foreign_files_fail_in_one_line(tmp_path):
    model = build_tiny({"inputs": 4, "hidden": 8})
    pre = Preprocessing(size=(32, 32))
    export_model(model, tmp_path / "e", project="test_tiny", architecture={"inputs": 4, "hidden": 8},
                 class_names=["a", "b"], task="multi-label", preprocessing=pre)
    info = json.loads((tmp_path / "e" / "model.json").read_text())
    info["architecture"]["hidden"] = 16
    (tmp_path / "e" / "model.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_export(tmp_path / "e")
    info["project"] = "nobody"
    info["builder_module"] = None
    (tmp_path / "e" / "model.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="no model builder registered for project 'nobody'"):
        load_export(tmp_path / "e")
    (tmp_path / "e" / "model.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="is not a medcls-export/1 export"):
        load_export(tmp_path / "e")


def test_bad_task_and_size_are_refused(tmp_path):
    with pytest.raises(ValueError, match="task must be one of"):
        export_model(nn.Linear(2, 2), tmp_path, project="test_tiny", architecture={}, class_names=["a", "b"],
                     task="regression", preprocessing=Preprocessing(size=(32, 32)))
    with pytest.raises(ValueError, match="does not have 3 dimensions"):
        Preprocessing(size=(32, 32), spatial_dims=3)
