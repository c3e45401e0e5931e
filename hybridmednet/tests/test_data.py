"""Datasets from the DATA section: patient splits, and training vs validation transforms."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from hybridmednet.data import build_datasets, build_transform
from shared.data import DataError


RANDOM_TRANSFORMS = {v2.RandomAffine, v2.ColorJitter, v2.RandAugment, v2.RandomErasing,
                     v2.RandomHorizontalFlip}


def _transform_types(transform: v2.Compose) -> set[type]:
    return {type(t) for t in transform.transforms}


@pytest.fixture
def xray():
    return Image.fromarray(torch.randint(0, 255, (48, 48), dtype=torch.uint8).numpy(), mode="L").convert("RGB")


@pytest.mark.parametrize("strong", [False, True])
def test_training_transform_augments_and_validation_transform_does_not(make_config, xray, strong):
    config = make_config(DATA={"use_albumentations": strong})
    train, val = build_transform(config.DATA, train=True), build_transform(config.DATA, train=False)
    assert v2.Resize in _transform_types(val) and not _transform_types(val) & RANDOM_TRANSFORMS
    assert {v2.RandomAffine, v2.CenterCrop, v2.ColorJitter} <= _transform_types(train)
    assert ({v2.RandAugment, v2.RandomErasing} <= _transform_types(train)) == strong
    assert v2.RandomHorizontalFlip not in _transform_types(train)  # the heart is on the left
    torch.manual_seed(0)
    assert not torch.equal(train(xray), train(xray))
    assert torch.equal(val(xray), val(xray)) and val(xray).shape == (3, 32, 32)


def test_demo_datasets_are_split_by_patient(make_config):
    config = make_config(DATA={"demo": True, "demo_num_images": 60})
    splits = build_datasets(config)
    patients = [set(split.records.patients) for split in splits]
    assert sum(len(split) for split in splits) == 60
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])
    image, labels = splits.train[0]
    assert image.shape == (3, 32, 32) and labels.shape == (14,)
    assert splits.train.transform is not splits.val.transform
    assert v2.RandomAffine in _transform_types(splits.train.transform)
    assert v2.RandomAffine not in _transform_types(splits.val.transform)


def test_missing_data_explains_which_keys_to_set(make_config, tmp_path):
    config = make_config(DATA={"data_dir": str(tmp_path / "nowhere"), "labels_file": str(tmp_path / "labels.csv")})
    with pytest.raises(DataError, match="DATA.data_dir=.*nowhere.*DATA.demo=true"):
        build_datasets(config)


def test_num_classes_must_match_the_findings(make_config):
    with pytest.raises(DataError, match="14 findings"):
        build_datasets(make_config(MODEL={"num_classes": 5}, DATA={"demo": True, "demo_num_images": 12}))
