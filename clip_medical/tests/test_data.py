import numpy as np
import pytest
from PIL import Image

from shared import DataError, build_image_transform, read_json
from shared import write_json as write_json_file
from clip_medical.data import (ClassFolderData, class_balanced_weights, cross_validation_folds, format_template,
                               resolve_class_texts, train_val_split)
from clip_medical.generate_class_texts import generate_class_texts
from clip_medical.generate_class_texts import main as generate_main

NAMES = ["正常", "肺炎"]


def write_json(path, data):
    return str(write_json_file(path, data))


def test_class_texts_come_from_file_then_template_then_name(tmp_path, class_texts):
    texts_file = write_json(tmp_path / "t.json", {**class_texts, "结节": "unused extra class"})
    assert resolve_class_texts(NAMES, texts_file, "这是{class_name}") == [class_texts[n] for n in NAMES]
    assert resolve_class_texts(NAMES, None, "这是一张{class_name}的图片") == ["这是一张正常的图片", "这是一张肺炎的图片"]
    assert resolve_class_texts(NAMES) == NAMES


def test_class_texts_file_missing_a_class_is_an_error(tmp_path):
    texts_file = write_json(tmp_path / "t.json", {"正常": "正常图像"})
    with pytest.raises(DataError, match=r"no description for class\(es\) \['肺炎'\]"):
        resolve_class_texts(NAMES, texts_file)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('["a", "b"]', "must hold a JSON object"),
    ('{"正常": "", "肺炎": "x"}', "empty or non-string description"),
])
def test_malformed_class_texts_file(tmp_path, content, message):
    path = tmp_path / "t.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        resolve_class_texts(NAMES, str(path))
    with pytest.raises(DataError, match="class texts file not found"):
        resolve_class_texts(NAMES, str(tmp_path / "absent.json"))


def test_template_without_placeholder_and_duplicate_texts_are_errors(tmp_path):
    with pytest.raises(ValueError, match="no \\{class_name\\} placeholder"):
        resolve_class_texts(NAMES, None, "这是一张医学图像")
    with pytest.raises(DataError, match="share the text"):
        resolve_class_texts(NAMES, write_json(tmp_path / "t.json", {"正常": "同一描述", "肺炎": "同一描述"}))
    assert format_template("{class_name} {other}", "肺炎") == "肺炎 {other}"


def test_scan_reads_class_folders_in_sorted_order(data_dir):
    data = ClassFolderData.scan(str(data_dir))
    assert data.class_names == sorted(NAMES) and data.class_to_idx == {"正常": 0, "肺炎": 1}
    assert np.bincount(data.labels).tolist() == [9, 9]
    image, label = data.subset(np.array([10]), build_image_transform(32, train=False))[0]
    assert image.shape == (3, 32, 32) and label == 1


def test_empty_class_folder_single_class_and_missing_dir_are_errors(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        ClassFolderData.scan(str(tmp_path / "nowhere"))
    (tmp_path / "a").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(DataError, match="holds one class folder .'a'.; a classifier needs at least two"):
        ClassFolderData.scan(str(tmp_path))
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match=r"class folder .*b has no files"):
        ClassFolderData.scan(str(tmp_path))


def test_corrupt_image_error_names_the_file(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / name / "ok.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    data = ClassFolderData.scan(str(tmp_path))
    dataset = data.subset(np.arange(3), build_image_transform(32, train=False))
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        [dataset[i] for i in range(3)]


def test_train_val_split_is_stratified_disjoint_and_seeded():
    labels = np.array([0] * 40 + [1] * 10)
    train, val = train_val_split(labels, 0.2, seed=42)
    assert len(val) == 10 and np.bincount(labels[val]).tolist() == [8, 2]
    assert set(train).isdisjoint(val) and len(set(train) | set(val)) == 50
    assert not np.all(np.diff(val) > 0)  # fixed random order, so validation batches mix classes
    again_train, again_val = train_val_split(labels, 0.2, seed=42)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)


def test_cross_validation_folds_partition_the_data():
    labels = np.array([0] * 12 + [1] * 6)
    folds = cross_validation_folds(labels, 3, seed=0)
    assert len(folds) == 3
    all_val = np.concatenate([val for _, val in folds])
    assert sorted(all_val.tolist()) == list(range(18))
    for train, val in folds:
        assert set(train).isdisjoint(val) and np.bincount(labels[val]).tolist() == [4, 2]
    with pytest.raises(DataError, match="at least 7 images in every class"):
        cross_validation_folds(labels, 7, seed=0)


def test_class_balanced_weights_give_every_class_equal_mass():
    labels = np.array([0, 0, 0, 1])
    weights = class_balanced_weights(labels)
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())


def test_generate_class_texts_template_interactive_and_no_overwrite(tmp_path, data_dir):
    output = tmp_path / "texts.json"
    texts = generate_main(["--data-dir", str(data_dir), "--output", str(output), "--template", "一张{class_name}图像"])
    assert texts == {"正常": "一张正常图像", "肺炎": "一张肺炎图像"}
    assert read_json(output) == texts
    with pytest.raises(FileExistsError, match="--force"):
        generate_main(["--data-dir", str(data_dir), "--output", str(output)])
    answers = iter(["肺部正常", ""])  # an empty answer keeps the template text
    assert generate_class_texts(NAMES, "{class_name}图像", interactive=True, ask=lambda _: next(answers)) == {
        "正常": "肺部正常", "肺炎": "肺炎图像"}
