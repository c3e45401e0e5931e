"""shared/heatmaps.py: Grad-CAM on tiny models trained where the label lives in one known region."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from timm.models.swin_transformer import SwinTransformer

from shared.heatmaps import find_target_layer, gradcam, mass_in_region, overlay, peak_index, peak_slices


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _patch_data(n: int, size: int, dims: int, patch: int, seed: int):
    """Noise images/volumes whose label is only the sign of a patch placed at random inside the
    first quadrant/octant (indices < size // 2 on every spatial axis)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, *([size] * dims), generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    half = size // 2
    for i in range(n):
        corner = torch.randint(1, half - patch, (dims,), generator=g).tolist()
        region = (i, 0, *(slice(c, c + patch) for c in corner))
        x[region] += 2.0 if y[i] == 1 else -2.0
    return x, y


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int = 64, lr: float = 3e-3) -> float:
    g = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _cnn(conv, channels: int = 1) -> nn.Sequential:
    pool = nn.AdaptiveAvgPool2d(1) if conv is nn.Conv2d else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(conv(channels, 8, 3, padding=1), nn.ReLU(), conv(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         conv(16, 16, 3, padding=1), nn.ReLU(), pool, nn.Flatten(), nn.Linear(16, 2))


@pytest.fixture(scope="module")
def trained_2d():
    torch.manual_seed(0)
    x, y = _patch_data(384, 32, 2, 6, seed=0)
    model = _cnn(nn.Conv2d)
    accuracy = _train(model, x, y, steps=150)
    return model, x, y, accuracy


@pytest.fixture(scope="module")
def trained_3d():
    torch.manual_seed(0)
    x, y = _patch_data(256, 16, 3, 4, seed=0)
    model = _cnn(nn.Conv3d)
    accuracy = _train(model, x, y, steps=200, batch=32)
    return model, x, y, accuracy


def test_2d_gradcam_mass_falls_in_the_quadrant_that_decides_the_label(trained_2d):
    model, x, y, accuracy = trained_2d
    assert accuracy > 0.97
    test_x, test_y = _patch_data(64, 32, 2, 6, seed=123)
    maps = gradcam(model, test_x, test_y.tolist())
    assert maps.shape == (64, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    quadrant = np.zeros((32, 32), bool)
    quadrant[:16, :16] = True
    mass = np.mean([mass_in_region(m, quadrant) for m in maps])
    print(f"2D: train accuracy {accuracy:.3f}, mean Grad-CAM mass in the label's quadrant {mass:.3f} (uniform 0.25)")
    assert mass > 0.5


def test_3d_gradcam_peaks_in_the_octant_that_decides_the_label(trained_3d):
    model, x, y, accuracy = trained_3d
    assert accuracy > 0.95
    test_x, test_y = _patch_data(32, 16, 3, 4, seed=123)
    maps = gradcam(model, test_x, test_y.tolist())
    assert maps.shape == (32, 16, 16, 16) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    octant = np.zeros((16, 16, 16), bool)
    octant[:8, :8, :8] = True
    mass = np.mean([mass_in_region(m, octant) for m in maps])
    peaks_inside = np.mean([octant[peak_index(m)] for m in maps])
    print(f"3D: train accuracy {accuracy:.3f}, mean mass in the octant {mass:.3f} (uniform 0.125), "
          f"peaks inside {peaks_inside:.2f}")
    # 3D maps come from a 8^3 feature map and spread more: 0.48 here, against 0.125 for a uniform map.
    assert mass > 0.35 and peaks_inside >= 0.75

    slices = peak_slices(maps[0])
    assert set(slices) == {"axial", "coronal", "sagittal"}
    assert all(s.shape == (16, 16) for s in slices.values())
    peak = peak_index(maps[0])
    assert octant[peak]
    top = maps[0].max()
    assert slices["sagittal"][peak[1], peak[2]] == top and slices["coronal"][peak[0], peak[2]] == top
    assert slices["axial"][peak[0], peak[1]] == top


def test_find_target_layer_for_timm_convnext_swin_and_a_plain_cnn():
    torch.manual_seed(0)
    convnext = timm.create_model("convnext_atto", pretrained=False, num_classes=2)
    assert find_target_layer(convnext, torch.zeros(1, 3, 64, 64)) is convnext.stages[-1]

    cnn = _cnn(nn.Conv2d, channels=3)
    assert find_target_layer(cnn, torch.zeros(1, 3, 32, 32)) is cnn[5]  # the last ReLU, before pooling
    cnn3d = _cnn(nn.Conv3d)
    assert find_target_layer(cnn3d, torch.zeros(1, 1, 16, 16, 16)) is cnn3d[5]

    # Swin stages are channels-last (N, H, W, C): the final norm is found and transposed for Grad-CAM.
    swin = SwinTransformer(img_size=64, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                           num_classes=2)
    x = torch.randn(2, 3, 64, 64)
    assert find_target_layer(swin, x) is swin.norm
    maps = gradcam(swin, x, [0, 1])
    assert maps.shape == (2, 64, 64) and 0.0 <= maps.min() and maps.max() <= 1.0 and maps.max() > 0


class _DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _cnn(nn.Conv2d, channels=3)

    def forward(self, x):
        return {"logits": self.net(x), "extra": torch.zeros(1)}


class _TupleModel(_DictModel):
    def forward(self, x):
        return self.net(x), None


@pytest.mark.parametrize("model_cls", [_DictModel, _TupleModel])
def test_gradcam_takes_logits_from_dict_or_tuple_outputs_and_keeps_the_model_state(model_cls):
    torch.manual_seed(0)
    model = model_cls().train()
    model.requires_grad_(False)  # frozen weights still give gradients to the target layer
    x = torch.randn(3, 3, 40, 48)
    with torch.no_grad():
        maps = gradcam(model, x, 1)
    assert maps.shape == (3, 40, 48) and maps.dtype == np.float32
    assert 0.0 <= maps.min() and maps.max() <= 1.0 and maps.max() > 0
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    explicit = gradcam(model, x, [1, 1, 1], target_layer=model.net[5])
    np.testing.assert_allclose(explicit, maps, atol=1e-6)
    with pytest.raises(ValueError):
        gradcam(model, x, [0, 1])


def test_overlay_and_mass_in_region():
    rng = np.random.default_rng(0)
    heat = rng.random((20, 30)).astype(np.float32)
    for image in (rng.normal(size=(20, 30)), rng.random((20, 30, 3)), rng.random((3, 20, 30)),
                  rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), rng.random((20, 30, 1))):
        out = overlay(image, heat)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert np.array_equal(overlay(np.zeros((4, 4), np.uint8), np.zeros((4, 4)), alpha=0.0), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        overlay(np.zeros((4, 4)), np.zeros((5, 5)))

    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    assert mass_in_region(np.ones((4, 4)), mask) == pytest.approx(0.25)
    spot = np.zeros((4, 4))
    spot[1, 1] = 3.0
    assert mass_in_region(spot, mask) == 1.0 and mass_in_region(spot, ~mask) == 0.0
    assert mass_in_region(np.zeros((4, 4)), mask) == 0.0
