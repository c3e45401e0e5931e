"""The preprocessed volume cache: identical tensors to the NIfTI pipeline, keyed by settings, resumable."""
import numpy as np
import pytest
import torch

import alzheimer_mosa.data_loader as data_loader
from alzheimer_mosa.data_loader import VolumeCache, build_datasets, load_split_records
from alzheimer_mosa.prepare_cache import prepare


NO_AUGMENTATION = {"flip_prob": 0.0, "affine_prob": 0.0, "noise_prob": 0.0, "bias_field_prob": 0.0, "gamma_prob": 0.0}


def test_cached_volumes_equal_the_nifti_pipeline(config_factory, demo_root, tmp_path):
    raw_cfg = config_factory(tmp_path, demo_root, augment=NO_AUGMENTATION)
    cached_cfg = config_factory(tmp_path, demo_root, augment=NO_AUGMENTATION, data={"cache_dir": str(tmp_path / "c")})
    raw = build_datasets(raw_cfg)
    assert all(ds.cache is None for ds in build_datasets(cached_cfg).values())  # not built yet: files
    prepare(cached_cfg)
    cached = build_datasets(cached_cfg)
    for split in raw:
        assert isinstance(cached[split].cache, VolumeCache)
        for i in range(len(raw[split])):
            (a, la), (b, lb) = raw[split][i], cached[split][i]
            assert la == lb
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # preprocessing done once == every epoch


def test_training_augmentation_still_applies_to_cached_volumes(config_factory, demo_root, tmp_path):
    cfg = config_factory(tmp_path, demo_root, data={"cache_dir": str(tmp_path / "c")})
    prepare(cfg)
    datasets = build_datasets(cfg)
    torch.manual_seed(0)
    draws = [datasets["train"][0][0] for _ in range(4)]
    assert any(not torch.equal(draws[0], other) for other in draws[1:])
    assert torch.equal(datasets["val"][0][0], datasets["val"][0][0])


def test_other_preprocessing_builds_another_cache(config_factory, demo_root, tmp_path):
    cfg = config_factory(tmp_path, demo_root, data={"cache_dir": str(tmp_path / "cache")})
    other = config_factory(tmp_path, demo_root, data={"cache_dir": str(tmp_path / "cache"), "target_size": [12, 12, 12]})
    records = load_split_records(cfg.data, cfg.train.seed)["val"]
    first = VolumeCache(cfg.data.cache_dir, records, cfg.data).build(progress=False)
    second = VolumeCache(other.data.cache_dir, records, other.data)
    assert first.ready and not second.ready and first.dir != second.dir
    assert second.build(progress=False).arrays()["volumes"].shape[2:] == (12, 12, 12)


def test_interrupted_build_resumes(config_factory, demo_root, tmp_path, monkeypatch):
    cfg = config_factory(tmp_path, demo_root, data={"cache_dir": str(tmp_path / "cache")})
    records = load_split_records(cfg.data, cfg.train.seed)["train"]
    calls = []
    real = data_loader.read_nifti

    def flaky(path):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(data_loader, "read_nifti", flaky)
    cache = VolumeCache(cfg.data.cache_dir, records, cfg.data)
    with pytest.raises(KeyboardInterrupt):
        cache.build(progress=False, chunk=2)
    assert not cache.ready
    calls.clear()
    cache.build(progress=False, chunk=2)
    assert cache.ready and len(calls) == len(records) - 4  # the first two finished chunks were kept
    monkeypatch.setattr(data_loader, "read_nifti", real)
    clean = VolumeCache(tmp_path / "clean", records, cfg.data).build(progress=False)
    assert np.array_equal(np.asarray(cache.arrays()["volumes"]), np.asarray(clean.arrays()["volumes"]))
