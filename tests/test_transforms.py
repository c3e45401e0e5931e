"""shared.data transforms: the uint8 path plus on-device normalisation equals the float path."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from shared.data import IMAGENET_MEAN, IMAGENET_STD, ImageNormalize, build_image_transform, pre_crop_size, \
    single_threaded_worker
from shared.tasks import MultiLabelTask


@pytest.fixture
def gray():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 40), dtype=np.uint8), mode="L")


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("augmentation", ["none", "standard", "strong"])
def test_uint8_output_normalised_on_device_equals_the_float_pipeline(gray, mode, augmentation):
    image = gray.convert(mode)
    as_float = build_image_transform(32, train=True, augmentation=augmentation)
    as_uint8 = build_image_transform(32, train=True, augmentation=augmentation, normalize=False)
    torch.manual_seed(1)
    expected = as_float(image)
    torch.manual_seed(1)
    shipped = as_uint8(image)
    assert shipped.dtype == torch.uint8 and shipped.shape == ((1 if mode == "L" else 3), 32, 32)
    if augmentation == "strong":  # random erasing fills 0 after normalisation in one path, before it in the other
        keep = (expected != 0).all(0) & (shipped != 0).all(0)
    else:
        keep = torch.ones(32, 32, dtype=torch.bool)
    finished = ImageNormalize()(shipped[None])[0]
    assert finished.shape == expected.shape == (3, 32, 32) and finished.dtype == torch.float32
    torch.testing.assert_close(finished[:, keep], expected[:, keep], rtol=0, atol=1e-5)


def test_image_normalize_values_and_dtype_check():
    white_and_black = torch.tensor([255, 0], dtype=torch.uint8).view(1, 1, 1, 2)
    out = ImageNormalize()(white_and_black)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 0, 0], (1 - mean) / std)
    torch.testing.assert_close(out[0, :, 0, 1], -mean / std)
    with pytest.raises(TypeError, match="expects uint8"):
        ImageNormalize()(out)


def test_training_geometry_is_one_affine_warp_of_the_pre_crop_image(gray):
    transform = build_image_transform(32, train=True, augmentation="standard", hflip=False, crop_margin=0.25)
    steps = [type(t) for t in transform.transforms]
    assert steps[:3] == [v2.Resize, v2.RandomAffine, v2.CenterCrop] and v2.RandomHorizontalFlip not in steps
    assert transform.transforms[0].size == [pre_crop_size(32, 0.25)] * 2 == [40, 40]
    torch.manual_seed(0)
    assert not torch.equal(transform(gray), transform(gray))


def test_multilabel_task_normalises_uint8_batches_before_the_model():
    seen = []

    def model(x):
        seen.append(x)
        return x.mean(dim=(2, 3))[:, :2]

    task = MultiLabelTask(torch.nn.BCEWithLogitsLoss(), ["a", "b"], input_transform=ImageNormalize())
    images = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    out = task.eval_step(model, (images, torch.zeros(2, 2)))
    expected = (1 - torch.tensor(IMAGENET_MEAN[:2])) / torch.tensor(IMAGENET_STD[:2])
    assert seen[0].shape == (2, 3, 4, 4) and seen[0].dtype == torch.float32
    torch.testing.assert_close(out["logits"], expected.expand(2, 2))


def test_loader_workers_run_simpleitk_single_threaded():
    sitk = pytest.importorskip("SimpleITK")  # torchio's resampler
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    try:
        single_threaded_worker(0)
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
