"""shared.io: atomic, strict JSON and CSV."""
import json
import math

import numpy as np
import pytest
import torch

from shared import read_json, write_csv, write_json


def test_write_json_is_strict_keeps_unicode_and_converts_numbers(tmp_path):
    path = write_json(tmp_path / "m.json", {"auc": float("nan"), "n": np.int64(3), "t": torch.tensor(0.25),
                                            "arr": np.array([1.5, np.inf]), "类别": "肺炎"})
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text and "肺炎" in text
    assert json.loads(text) == {"auc": None, "n": 3, "t": 0.25, "arr": [1.5, None], "类别": "肺炎"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_json_failure_keeps_previous_file(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".*.tmp"))


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="class texts .*bad.json is not valid JSON"):
        read_json(bad, what="class texts")
    with pytest.raises(ValueError, match="class texts not found"):
        read_json(tmp_path / "missing.json", what="class texts")


def test_write_csv_formats_floats_and_nan(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["class", "auroc"], [["a", 0.123456789], ["b", math.nan]])
    assert path.read_text() == "class,auroc\na,0.123457\nb,\n"


def test_files_get_the_users_umask_not_0600(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "shared.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
