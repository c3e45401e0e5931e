"""Class-folder data: every mistake that would shift or fake the labels is refused up front."""
import pytest
from PIL import Image

from shared import DataError, scan_class_folders


def make(root, classes, per_class=2):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8)).save(root / name / f"{i}.png")


def test_classes_are_sorted_and_indexed(tmp_path):
    make(tmp_path, ["pneumonia", "normal"])
    samples, classes = scan_class_folders(tmp_path)
    assert classes == ["normal", "pneumonia"]
    assert [(p.parent.name, label) for p, label in samples] == [("normal", 0)] * 2 + [("pneumonia", 1)] * 2


def test_one_class_is_refused_with_how_to_fix(tmp_path):
    make(tmp_path, ["daisy"])
    with pytest.raises(DataError, match=r"holds one class folder \('daisy'\); a classifier needs at least two"):
        scan_class_folders(tmp_path)
