"""Class-folder splits by patient (``split.group_pattern``) in convnext_v2 and clip_medical.

Kermany-style chest X-rays hold several images per person (``person123_bacteria_456.jpeg``); split by image,
one person lands in training and validation, and a validation AUC of 0.987 fell to 0.886 on an independent
test set. Without a pattern the splits stay exactly what they were (the indices below are the old code's).
"""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_medical.data import ClassFolderData, cross_validation_folds, train_val_split
from clip_medical.train_clip import parse_args
from convnext_v2.train import build_datasets, parse_config
from shared import ConfigError, DataError, group_ids, stratified_split

PATTERN = r"person(\d+)"
#: The whole Kermany set (README): NORMAL files are IM-0115-0001.jpeg or NORMAL2-IM-1427-0001.jpeg.
KERMANY_PATTERN = r"^(person\d+|(?:NORMAL2-)?IM-\d+)"


def write_kermany(root: Path, people=(10, 16), images_per_person=(3, 1, 4, 2, 2, 5)) -> Path:
    """NORMAL and PNEUMONIA folders of 32 px JPEGs named ``person<id>_<kind>_<image number>.jpeg``, 1-5 per person."""
    number = 0
    for (name, kinds), count in zip((("NORMAL", ("normal",)), ("PNEUMONIA", ("bacteria", "virus"))), people):
        (root / name).mkdir(parents=True)
        for person in range(count):
            person_id = person * 2 + (name == "PNEUMONIA")
            for _ in range(images_per_person[(person + len(name)) % len(images_per_person)]):
                number += 1
                Image.new("L", (32, 32), number % 256).save(
                    root / name / f"person{person_id}_{kinds[number % len(kinds)]}_{number}.jpeg")
    return root


@pytest.fixture(scope="module")
def kermany(tmp_path_factory) -> Path:
    return write_kermany(tmp_path_factory.mktemp("kermany"))


def person(path: str) -> str:
    return Path(path).name.split("_")[0]


def assert_grouped(parts_groups: list[list[str]], parts_labels: list[np.ndarray], total: int) -> None:
    """No person in two parts, every image in one part, each part's class mix near the whole set's."""
    people = [set(groups) for groups in parts_groups]
    assert all(a.isdisjoint(b) for i, a in enumerate(people) for b in people[i + 1:])
    assert sum(len(groups) for groups in parts_groups) == total
    overall = np.concatenate(parts_labels).mean()
    assert all(abs(labels.mean() - overall) < 0.15 for labels in parts_labels)


@pytest.mark.parametrize("fractions", ["[0.8,0.2]", "[0.7,0.15,0.15]"])
def test_convnext_split_keeps_every_person_in_one_part(kermany, fractions):
    argv = ["--data-dir", str(kermany), "--split.fractions", fractions, "--split.group_pattern", PATTERN]
    parts = build_datasets(parse_config(argv))
    assert_grouped([p.groups for p in parts], [p.labels for p in parts], total=73)
    assert all(p.groups == [person(s)[len("person"):] for s in p.sample_ids] for p in parts)
    assert [p.sample_ids for p in build_datasets(parse_config(argv))] == [p.sample_ids for p in parts]  # seeded
    by_image = build_datasets(parse_config(argv[:4]))  # the old split: a person on both sides
    assert {person(s) for s in by_image[0].sample_ids} & {person(s) for s in by_image[1].sample_ids}


def test_clip_split_and_every_cv_fold_keep_persons_together(kermany):
    cfg = parse_args(["--data-dir", str(kermany), "--output-dir", "unused", "--split.group_pattern", PATTERN])
    data = ClassFolderData.scan(cfg.data_dir, group_pattern=cfg.split.group_pattern)
    groups = np.array(data.groups)
    train, val = train_val_split(data.labels, 0.2, seed=0, groups=data.groups)
    assert_grouped([groups[train], groups[val]], [data.labels[train], data.labels[val]], total=73)
    assert np.array_equal(val, train_val_split(data.labels, 0.2, seed=0, groups=data.groups)[1])
    assert data.subset(val, transform=None).groups == groups[val].tolist()
    folds = cross_validation_folds(data.labels, 3, seed=0, groups=data.groups)
    for fold_train, fold_val in folds:
        assert_grouped([groups[fold_train], groups[fold_val]], [data.labels[fold_train], data.labels[fold_val]], 73)
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(73))
    again = cross_validation_folds(data.labels, 3, seed=0, groups=data.groups)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(folds, again))
    with pytest.raises(DataError, match=r"--n-splits 11 needs at least 11 patients \(split.group_pattern\) in every "
                                        r"class; the smallest class has 10"):
        cross_validation_folds(data.labels, 11, seed=0, groups=data.groups)


def test_without_a_pattern_the_splits_are_the_old_ones(kermany):
    """The indices and files the code before split.group_pattern chose for this folder and seed 0."""
    train, val = build_datasets(parse_config(["--data-dir", str(kermany), "--split.fractions", "[0.8,0.2]",
                                              "--train.seed", "0"]))
    assert [Path(s).name for s in val.sample_ids] == [
        "person0_normal_1.jpeg", "person10_normal_13.jpeg", "person16_normal_22.jpeg", "person16_normal_25.jpeg",
        "person4_normal_7.jpeg", "person4_normal_8.jpeg", "person11_bacteria_42.jpeg", "person13_virus_45.jpeg",
        "person19_virus_55.jpeg", "person1_bacteria_28.jpeg", "person21_virus_57.jpeg", "person23_bacteria_60.jpeg",
        "person25_virus_63.jpeg", "person29_bacteria_70.jpeg", "person3_bacteria_30.jpeg"]
    assert train.groups == train.sample_ids and val.labels.dtype == np.int64
    data = ClassFolderData.scan(str(kermany))
    assert data.groups == [str(p) for p in data.paths]
    _, clip_val = train_val_split(data.labels, 0.2, seed=0, groups=data.groups)
    assert clip_val.tolist() == [12, 47, 15, 45, 0, 21, 32, 22, 62, 51, 27, 43, 56, 42, 3]
    first_fold = cross_validation_folds(data.labels, 3, seed=0, groups=data.groups)[0][1]
    assert first_fold.tolist() == [58, 16, 33, 34, 70, 11, 69, 20, 51, 68, 15, 61, 23, 0, 59, 43, 55, 44, 22, 17,
                                   52, 46, 29, 4, 49]


def test_one_image_per_group_splits_exactly_by_image():
    labels = [0] * 30 + [1] * 20
    by_image = stratified_split(labels, [0.7, 0.15, 0.15], seed=5)
    by_group = stratified_split(labels, [0.7, 0.15, 0.15], seed=5, groups=[f"p{i}" for i in range(50)])
    assert all(np.array_equal(a, b) for a, b in zip(by_image, by_group))
    with pytest.raises(DataError, match="2 groups .* cannot fill the 3 parts"):
        stratified_split(labels, [0.7, 0.15, 0.15], seed=5, groups=["a"] * 25 + ["b"] * 25)


def test_the_documented_kermany_pattern_covers_normal_and_pneumonia_names():
    names = ["IM-0115-0001.jpeg", "NORMAL2-IM-1427-0001.jpeg", "person1_bacteria_1.jpeg", "person1_virus_6.jpeg"]
    assert group_ids(names, KERMANY_PATTERN) == ["IM-0115", "NORMAL2-IM-1427", "person1", "person1"]
    assert group_ids(names[2:], PATTERN) == ["1", "1"]


def test_a_file_name_the_pattern_misses_is_one_line_naming_file_pattern_and_key(kermany, tmp_path):
    root = write_kermany(tmp_path / "data", people=(3, 3))
    Image.new("L", (32, 32)).save(root / "NORMAL" / "IM-0115-0001.jpeg")
    message = r"IM-0115-0001.jpeg: the file name does not match split.group_pattern 'person\(\\d\+\)'"
    with pytest.raises(DataError, match=message) as convnext_error:
        build_datasets(parse_config(["--data-dir", str(root), "--split.group_pattern", PATTERN]))
    with pytest.raises(DataError, match=message) as clip_error:
        ClassFolderData.scan(str(root), group_pattern=PATTERN)
    assert "\n" not in str(convnext_error.value) + str(clip_error.value)


def test_an_invalid_regex_is_a_config_error_naming_the_key(kermany):
    with pytest.raises(ConfigError, match=r"^split.group_pattern: 'person\(\\d\+' is not a valid regular expression"
                       ) as convnext_error:
        parse_config(["--data-dir", str(kermany), "--split.group_pattern", r"person(\d+"])
    with pytest.raises(ConfigError, match="^split.group_pattern: .* is not a valid regular expression") as clip_error:
        parse_args(["--data-dir", str(kermany), "--output-dir", "unused", "--split.group_pattern", "person(["])
    assert "\n" not in str(convnext_error.value) + str(clip_error.value)
