"""The preprocessed image cache: same tensors as the raw files, rebuilt for a new size, resumable."""
import numpy as np
import pytest
import torch

import shared.cache
from convnext_cxr import prepare_cache
from convnext_cxr.dataset import DataConfig, build_datasets
from shared.cache import ImageCache
from shared.data import ImageNormalize
from shared.cxr14_demo import make_synthetic_cxr


def data_cfg(tiny_cxr, cache_dir, size=32):
    image_dir, csv_path = tiny_cxr
    return DataConfig(image_dir=str(image_dir), labels_csv=str(csv_path), image_size=size, augmentation="none",
                      cache_dir=str(cache_dir))


def test_cached_tensors_match_raw_files(tmp_path, capsys):
    full_size = make_synthetic_cxr(tmp_path / "data", num_images=45, size=128, seed=5)  # larger than trained
    cfg = data_cfg(full_size, tmp_path / "cache")
    raw = build_datasets(cfg, tmp_path)
    assert raw.train.cache is None and "reading the original files" in capsys.readouterr().out
    prepare_cache.main(["--data.image_dir", cfg.image_dir, "--data.labels_csv", cfg.labels_csv,
                        "--data.image_size", "32", "--data.cache_dir", cfg.cache_dir])
    cached = build_datasets(cfg, tmp_path)
    assert cached.train.cache is not None and cached.train.cache.ready
    diffs = []
    for split in ("train", "val", "test"):
        a, b = getattr(raw, split), getattr(cached, split)
        assert len(a) == len(b)
        for i in range(0, len(a), 7):
            (xa, ya), (xb, yb) = a[i], b[i]
            assert torch.equal(ya, yb)
            assert xa.dtype == xb.dtype == torch.uint8 and xa.shape == xb.shape == (1, 32, 32)  # as loaders ship it
            xa, xb = ImageNormalize()(xa[None])[0], ImageNormalize()(xb[None])[0]  # as the task sees it
            assert xa.shape == (3, 32, 32)
            # equal up to resize interpolation (128 -> 37 -> 32 px instead of 128 -> 32 px)
            diffs.append((xa - xb).abs().mean().item())
            assert np.corrcoef(xa.flatten(), xb.flatten())[0, 1] > 0.99
    assert max(diffs) < 0.06  # normalised units: about 0.013 of the 0-1 intensity range


def test_augmented_training_tensors_are_identical_from_cache_and_raw_files(tmp_path):
    """The cache stores exactly the training transform's first step (resize to size + margin), so the same
    random draws give the same augmented tensor, bit for bit."""
    full_size = make_synthetic_cxr(tmp_path / "data", num_images=30, size=128, seed=6)
    cfg = data_cfg(full_size, tmp_path / "cache")
    cfg.augmentation = "strong"
    prepare_cache.main(["--data.image_dir", cfg.image_dir, "--data.labels_csv", cfg.labels_csv,
                        "--data.image_size", "32", "--data.cache_dir", cfg.cache_dir])
    cached = build_datasets(cfg, tmp_path).train
    cfg.cache_dir = ""
    raw = build_datasets(cfg, tmp_path).train
    assert cached.cache is not None and raw.cache is None
    for i in range(len(raw)):
        torch.manual_seed(i)
        from_raw = raw[i][0]
        torch.manual_seed(i)
        assert torch.equal(cached[i][0], from_raw)
    torch.manual_seed(0)
    first = raw[0][0]
    assert not torch.equal(raw[0][0], first)  # augmentation is random: the equality above is not trivial


def test_changed_size_builds_a_new_cache(tiny_cxr, tmp_path):
    paths = sorted(tiny_cxr[0].glob("*.png"))[:10]
    small = ImageCache(tmp_path, paths, size=24).build(progress=False)
    large = ImageCache(tmp_path, paths, size=40)
    assert small.ready and not large.ready and small.dir != large.dir
    assert np.asarray(large.build(progress=False)[3]).shape == (40, 40)
    assert ImageCache(tmp_path, paths[:9], size=24).dir != small.dir  # a different image list, too


def test_interrupted_build_resumes_and_matches_a_clean_build(tiny_cxr, tmp_path, monkeypatch):
    paths = (sorted(tiny_cxr[0].glob("*.png")) * 4)[:300]  # more than one 256-image chunk
    loads = []
    real_load = shared.cache.load_image

    def flaky_load(path, mode="RGB"):
        loads.append(path)
        if len(loads) == 270:
            raise KeyboardInterrupt  # killed in the second chunk
        return real_load(path, mode=mode)

    monkeypatch.setattr(shared.cache, "load_image", flaky_load)
    cache = ImageCache(tmp_path / "a", paths, size=20)
    with pytest.raises(KeyboardInterrupt):
        cache.build(progress=False)
    assert not cache.ready and (cache.dir / "rows.partial").is_file()
    loads.clear()
    cache.build(progress=False)
    assert cache.ready and len(loads) == 300 - 256  # only the unfinished chunk was decoded again
    monkeypatch.setattr(shared.cache, "load_image", real_load)
    clean = ImageCache(tmp_path / "b", paths, size=20).build(progress=False)
    for i in (0, 255, 256, 299):
        assert np.array_equal(np.asarray(cache[i]), np.asarray(clean[i]))
