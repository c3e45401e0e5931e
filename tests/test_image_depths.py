"""Images of every depth load with their contrast: 16-bit files are scaled by their range, never clipped."""
import numpy as np
import pytest
from PIL import Image

from shared import load_image


def gradient(height=32, width=48):
    return np.tile(np.linspace(0, 255, width), (height, 1)).round().astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_equals_its_8_bit_original(tmp_path, suffix):
    eight = gradient()
    Image.fromarray(eight).save(tmp_path / "eight.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / f"sixteen{suffix}")  # full 16-bit range
    with Image.open(tmp_path / f"sixteen{suffix}") as raw:
        assert raw.mode in ("I;16", "I;16B", "I;16L", "I")  # really a 16-bit file
    loaded = np.asarray(load_image(tmp_path / f"sixteen{suffix}", mode="L"), dtype=np.int64)
    original = np.asarray(load_image(tmp_path / "eight.png", mode="L"), dtype=np.int64)
    assert np.abs(loaded - original).max() <= 1
    assert abs(loaded.mean() - original.mean()) < 0.5  # the saturating conversion gave ~254 here


def test_12_bit_values_in_a_16_bit_file_use_the_full_8_bit_range(tmp_path):
    values = np.tile(np.linspace(100, 4000, 64), (16, 1)).round().astype(np.uint16)  # a DICOM-style export
    Image.fromarray(values).save(tmp_path / "x.png")
    loaded = np.asarray(load_image(tmp_path / "x.png", mode="L"))
    assert loaded.min() == 0 and loaded.max() == 255
    assert (loaded == 255).mean() < 0.05  # not saturated
    expected = (values - 100) / 3900 * 255
    assert np.abs(loaded - expected).max() <= 0.5 + 1e-9
    rgb = np.asarray(load_image(tmp_path / "x.png", mode="RGB"))
    assert rgb.shape == (16, 64, 3) and (rgb[..., 0] == loaded).all()


def test_constant_16_bit_image_is_black_not_an_error(tmp_path):
    Image.fromarray(np.full((8, 8), 1234, np.uint16)).save(tmp_path / "flat.png")
    assert np.asarray(load_image(tmp_path / "flat.png", mode="L")).max() == 0


def test_float_and_32_bit_images_are_scaled(tmp_path):
    values = np.linspace(-1.0, 3.0, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    loaded = np.asarray(load_image(tmp_path / "f.tif", mode="L"))
    assert loaded.min() == 0 and loaded.max() == 255


def test_rgba_composites_on_black_and_palette_goes_through_its_colours(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent red
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    loaded = np.asarray(load_image(tmp_path / "a.png"))
    assert (loaded[:2, :, 0] == 200).all() and (loaded[2:] == 0).all()

    rgb = np.stack([gradient(8, 16)] * 3, -1)
    rgb[..., 1] = 255 - rgb[..., 1]
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=256).save(tmp_path / "p.png")
    palette_loaded = np.asarray(load_image(tmp_path / "p.png"), dtype=np.int64)
    with Image.open(tmp_path / "p.png") as raw:
        assert raw.mode == "P"
        via_palette = np.asarray(raw.convert("RGB"), dtype=np.int64)
    assert np.array_equal(palette_loaded, via_palette)
    assert np.abs(palette_loaded - rgb).max() <= 8


def test_8_bit_grayscale_and_rgb_are_unchanged(tmp_path):
    eight = gradient()
    Image.fromarray(eight).save(tmp_path / "g.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "g.png", mode="L")), eight)
    rgb = np.stack([eight, 255 - eight, eight // 2], -1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "c.png")), rgb)
