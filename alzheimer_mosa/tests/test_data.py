"""The torchio pipeline, class-folder and CSV discovery, and the errors bad data must raise."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torchio as tio

from alzheimer_mosa.augment import RandomSeparableBiasField, SeparableBiasField, build_transform
from alzheimer_mosa.config import AugmentConfig, DataConfig
from alzheimer_mosa.data_loader import VolumeDataset, VolumeRecord, build_datasets, load_split_records, read_nifti
from alzheimer_mosa.demo_data import synthetic_volume
from shared import DataError


def save_nifti(path, volume, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.eye(4) if affine is None else affine), path)
    return path


def transformed(path, data: DataConfig, train: bool = False, aug: AugmentConfig | None = None) -> torch.Tensor:
    dataset = VolumeDataset([VolumeRecord(path, 0, "s")], build_transform(data, aug or AugmentConfig(), train))
    return dataset[0][0]


@pytest.fixture
def brain(tmp_path):
    return save_nifti(tmp_path / "brain.nii.gz", synthetic_volume(1, 2, 24, np.random.default_rng(0)))


@pytest.mark.parametrize("size_mode", ["resize", "crop_pad"])
def test_zscore_pipeline_gives_target_size_and_unit_statistics(brain, size_mode):
    image = transformed(brain, DataConfig(target_size=[20, 16, 12], size_mode=size_mode))
    assert image.shape == (1, 20, 16, 12) and image.dtype == torch.float32
    assert image.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert image.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)


def test_percentile_normalisation_maps_into_unit_range(brain):
    image = transformed(brain, DataConfig(target_size=[16, 16, 16], normalization="percentile",
                                          percentile_range=[1.0, 99.0]))
    assert image.min().item() == pytest.approx(0.0, abs=1e-6)
    assert image.max().item() == pytest.approx(1.0, abs=1e-6)


def test_foreground_crop_keeps_the_object_bounding_box(tmp_path):
    volume = np.zeros((30, 30, 30))
    volume[2:8, 20:28, 10:13] = 5.0  # a 6 x 8 x 3 box off-centre
    path = save_nifti(tmp_path / "box.nii.gz", volume)
    data = DataConfig(target_size=[10, 10, 10], size_mode="crop_pad", normalization="percentile",
                      percentile_range=[0.0, 100.0], foreground_margin=1)
    image = transformed(path, data)[0]
    # Cropped to 8 x 10 x 5 (box + 1 voxel margin), then padded to 10^3 (1+1, 0+0, 3+2): the box is centred.
    assert (image > 0.5).sum().item() == 6 * 8 * 3
    nonzero = (image > 0.5).nonzero()
    assert nonzero.min(0).values.tolist() == [2, 1, 4] and nonzero.max(0).values.tolist() == [7, 8, 6]
    with pytest.warns(RuntimeWarning, match="all the intensity values are the same"):
        uncropped = transformed(path, DataConfig(target_size=[10, 10, 10], size_mode="crop_pad",
                                                 foreground_crop=False, normalization="percentile"))
    assert (uncropped[0] > 0.5).sum().item() == 0  # the centre 10^3 window misses the box


def test_canonical_orientation_undoes_a_flipped_affine(tmp_path, brain):
    volume = nib.load(brain).get_fdata()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[:2, 3] = volume.shape[0] - 1, volume.shape[1] - 1  # same world positions, axes 0 and 1 reversed
    flipped = save_nifti(tmp_path / "lps.nii.gz", volume[::-1, ::-1], lps)
    data = DataConfig(target_size=[16, 16, 16])
    assert torch.allclose(transformed(flipped, data), transformed(brain, data), atol=1e-5)


def test_training_augmentation_changes_the_input_and_validation_does_not(brain):
    data = DataConfig(target_size=[16, 16, 16])
    aug = AugmentConfig(flip_prob=0.5, affine_prob=1.0, noise_prob=1.0, bias_field_prob=1.0, gamma_prob=1.0)
    torch.manual_seed(0)
    val_a, val_b = transformed(brain, data), transformed(brain, data)
    train_a, train_b = transformed(brain, data, True, aug), transformed(brain, data, True, aug)
    assert torch.equal(val_a, val_b)
    assert not torch.allclose(train_a, val_a, atol=1e-2)
    assert not torch.allclose(train_a, train_b, atol=1e-2)
    assert train_a.shape == val_a.shape
    off = AugmentConfig(flip_prob=0, affine_prob=0, noise_prob=0, bias_field_prob=0, gamma_prob=0)
    assert torch.allclose(transformed(brain, data, True, off), val_a)


@pytest.mark.parametrize("shape", [(1, 16, 16, 16), (2, 9, 6, 1), (1, 7, 12, 5)])
def test_separable_bias_field_equals_torchio(shape):
    coefficients = np.random.default_rng(0).uniform(-0.5, 0.5, 20).tolist()  # order 3: 20 coefficients
    data = torch.rand(shape)
    ours = SeparableBiasField.generate_bias_field(data, 3, coefficients)
    reference = tio.BiasField.generate_bias_field(data, 3, coefficients)
    assert ours.dtype == np.float32 and ours.shape == shape[1:]
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    assert ours.std() > 0.05  # a real field, not ones


def test_random_separable_bias_field_samples_like_torchio():
    image = tio.ScalarImage(tensor=torch.rand(1, 10, 8, 6) + 1.0)
    outputs = []
    for transform in (RandomSeparableBiasField(coefficients=0.4), tio.RandomBiasField(coefficients=0.4)):
        torch.manual_seed(3)
        outputs.append(transform(tio.Subject(image=image))["image"].data)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-6, atol=0)
    assert not torch.allclose(outputs[0], image.data)


def test_4d_volume_uses_first_frame(tmp_path):
    frames = np.stack([np.full((6, 7, 8), float(t)) for t in range(3)], axis=-1)  # (X, Y, Z, T)
    tensor, _ = read_nifti(save_nifti(tmp_path / "series.nii.gz", frames + 1.0))
    assert tensor.shape == (1, 6, 7, 8)
    assert torch.all(tensor == 1.0)


def test_unreadable_volume_is_a_clear_error(tmp_path):
    bad = tmp_path / "train" / "CN" / "broken.nii.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a nifti file")
    with pytest.raises(DataError, match="cannot read NIfTI volume .*broken.nii.gz"):
        read_nifti(bad)


def test_class_folders_follow_config_order(make_config, demo_root):
    cfg = make_config(data={"class_names": ["AD", "CN"], "positive_class": "AD"})
    datasets = build_datasets(cfg)
    assert set(datasets) == {"train", "val", "test"}
    labels = {r.path.parent.name: r.label for r in datasets["train"].records}
    assert labels == {"AD": 0, "CN": 1}
    image, label = datasets["val"][0]
    assert image.shape == (1, 16, 16, 16) and label in (0, 1)


def test_datasets_expose_labels_and_subjects_for_the_preflight(make_config, demo_root, tmp_path):
    """Class folders: the file name is the subject, and the demo names differ between splits; a manifest's
    ``subject`` column is used as it is."""
    datasets = build_datasets(make_config())
    train = datasets["train"]
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [r.label for r in train.records]
    assert np.bincount(train.labels).tolist() == [4, 4]
    assert train.groups == [r.path.name.split(".")[0] for r in train.records]
    assert not set(train.groups) & (set(datasets["val"].groups) | set(datasets["test"].groups))
    manifest = build_datasets(make_config(data={"data_root": str(write_manifest(tmp_path, demo_root, True))}))
    assert manifest["val"].groups == [f"{r.path.parent.name}_{r.path.name.split('.')[0][-3:]}"
                                      for r in manifest["val"].records]


def test_empty_and_unknown_class_folders_are_errors(make_config, tmp_path):
    for split in ("train", "val"):
        save_nifti(tmp_path / "data" / split / "CN" / "a.nii.gz", np.ones((4, 4, 4)))
        (tmp_path / "data" / split / "AD").mkdir(parents=True)
    cfg = make_config(data={"data_root": str(tmp_path / "data")})
    with pytest.raises(DataError, match="class folder .*AD has no .nii"):
        load_split_records(cfg.data, seed=0)
    save_nifti(tmp_path / "data" / "train" / "AD" / "b.nii.gz", np.ones((4, 4, 4)))
    (tmp_path / "data" / "train" / "MCI").mkdir()
    with pytest.raises(DataError, match=r"\['MCI'\] are not in data.class_names"):
        load_split_records(cfg.data, seed=0)


def write_manifest(tmp_path, demo_root, with_split: bool):
    rows = []
    for path in sorted(demo_root.rglob("*.nii.gz")):
        split, label = path.parent.parent.name, path.parent.name
        row = {"path": str(path.relative_to(demo_root)), "label": label, "subject": f"{label}_{path.name.split('.')[0][-3:]}"}
        rows.append({**row, "split": split} if with_split else row)
    csv = demo_root / f"manifest_{with_split}.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_manifest_with_split_column(make_config, demo_root, tmp_path):
    cfg = make_config(data={"data_root": str(write_manifest(tmp_path, demo_root, with_split=True))})
    splits = load_split_records(cfg.data, seed=0)
    assert {s: len(r) for s, r in splits.items()} == {"train": 8, "val": 4, "test": 4}
    assert all(r.path.is_file() for records in splits.values() for r in records)


def test_manifest_without_split_keeps_each_subject_in_one_split(make_config, demo_root, tmp_path):
    csv = write_manifest(tmp_path, demo_root, with_split=False)  # demo_<split>_000 of every split is one subject
    cfg = make_config(data={"data_root": str(csv), "val_fraction": 0.25, "test_fraction": 0.25})
    splits = load_split_records(cfg.data, seed=0)
    subjects = {s: {r.subject for r in records} for s, records in splits.items()}
    assert sum(len(r) for r in splits.values()) == 16
    assert not (subjects["train"] & subjects["val"]) and not (subjects["train"] & subjects["test"])
    assert not (subjects["val"] & subjects["test"])


@pytest.mark.parametrize("column,value,message", [
    ("label", "MCI", "row 2: label 'MCI' is not in data.class_names"),
    ("path", "missing.nii.gz", "row 2: file not found"),
])
def test_bad_manifest_rows_are_errors(make_config, demo_root, tmp_path, column, value, message):
    csv = write_manifest(tmp_path, demo_root, with_split=True)
    table = pd.read_csv(csv)
    table.loc[0, column] = value
    table.to_csv(csv, index=False)
    with pytest.raises(DataError, match=message):
        load_split_records(make_config(data={"data_root": str(csv)}).data, seed=0)


def test_manifest_without_label_column_is_an_error(make_config, tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("file,diagnosis\na.nii.gz,AD\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['path', 'label'\]"):
        load_split_records(make_config(data={"data_root": str(csv)}).data, seed=0)


def test_demo_classes_differ_learnably():
    """The ventricle (dark voxels inside the brain) is larger for the last class, sample after sample."""
    rng = np.random.default_rng(1)

    def dark_fraction(label):
        volume = synthetic_volume(label, 2, 24, rng)
        brain = volume > 0.05 * volume.max()
        return (brain & (volume < 0.4 * volume.max())).sum()

    healthy = [dark_fraction(0) for _ in range(10)]
    atrophy = [dark_fraction(1) for _ in range(10)]
    assert max(healthy) < min(atrophy)
