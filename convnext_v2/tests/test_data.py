"""Augmentations from the source document, class-folder splits and bad-input errors."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from convnext_v2.data import AugmentConfig, build_train_transform, split_class_folder
from convnext_v2.train import build_datasets, parse_config
from shared import ConfigError, DataError


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))


@pytest.mark.parametrize("overrides", [
    {},
    {"crop": "random"},
    {"auto_augment": "autoaugment"},
    {"auto_augment": "randaugment"},
    {"auto_augment": "trivialaugment"},
    {"hflip": False, "rotation": 0, "translate": 0, "color_jitter": 0, "random_erasing": 0},
])
def test_train_transform_gives_normalised_square_tensors(image, overrides):
    transform = build_train_transform(32, replace(AugmentConfig(), **overrides))
    out = transform(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert -2.2 < out.min() and out.max() < 2.7  # ImageNet-normalised [0, 1] values


def test_train_transform_holds_the_documented_steps():
    steps = [type(t) for t in build_train_transform(32, AugmentConfig(auto_augment="autoaugment")).transforms]
    for expected in (v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.RandomRotation, v2.RandomAffine,
                     v2.ColorJitter, v2.AutoAugment, v2.RandomErasing):
        assert expected in steps
    assert v2.RandomCrop in [type(t) for t in build_train_transform(32, AugmentConfig(crop="random")).transforms]


def test_bad_augment_options_are_explained():
    with pytest.raises(ValueError, match="augment.crop"):
        build_train_transform(32, AugmentConfig(crop="center"))
    with pytest.raises(ValueError, match="augment.auto_augment"):
        build_train_transform(32, AugmentConfig(auto_augment="augmix"))


def make_folders(root, counts):
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_split_is_stratified_seeded_and_disjoint(tmp_path):
    root = make_folders(tmp_path, {"a": 40, "b": 20})
    identity = [lambda x: x] * 3
    parts = split_class_folder(root, [0.7, 0.15, 0.15], seed=3, transforms=identity)
    again = split_class_folder(root, [0.7, 0.15, 0.15], seed=3, transforms=identity)
    assert len(parts[0]) == 42 and abs(len(parts[1]) - 9) <= 1 and len(parts[1]) + len(parts[2]) == 18
    assert [p.samples for p in parts] == [p.samples for p in again]
    assert len({path for p in parts for path, _ in p.samples}) == 60
    assert all(abs(np.mean(p.labels) - 1 / 3) < 0.1 for p in parts)  # a third are class "b" everywhere
    assert parts[0].class_names == ["a", "b"]


def test_build_datasets_with_separate_val_dir(tmp_path):
    make_folders(tmp_path / "train", {"a": 3, "b": 3})
    make_folders(tmp_path / "val", {"a": 1, "b": 2})
    cfg = parse_config(
        ["--data-dir", str(tmp_path / "train"), "--val-dir", str(tmp_path / "val"), "--image-size", "16"]
    )
    train, val = build_datasets(cfg)
    assert (len(train), len(val)) == (6, 3) and val[0][0].shape == (3, 16, 16)
    with pytest.raises(ConfigError, match="split.fractions needs 2 .* or 3"):
        parse_config(["--data-dir", str(tmp_path / "train"), "--split.fractions", "[1.0]"])


def test_command_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="--data-dir is required"):
        parse_config(["--model", "convnextv2_atto"])
    with pytest.raises(ValueError, match="unknown config key"):
        parse_config(["--data-dir", "x", "--train.learning_rate", "1"])
    with pytest.raises(DataError, match="data directory not found"):
        build_datasets(parse_config(["--data-dir", str(tmp_path / "missing")]))


def test_corrupt_image_names_the_file(tmp_path):
    root = make_folders(tmp_path, {"a": 2, "b": 2})
    (root / "b" / "1.png").write_bytes(b"not a png")
    parts = split_class_folder(root, [0.5, 0.5], seed=0, transforms=[lambda x: x] * 2)
    with pytest.raises(DataError, match="1.png"):
        [sample for part in parts for sample in part]
