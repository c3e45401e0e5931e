import numpy as np
import pytest
import torch
from PIL import Image

COLOURS = {"blue": (30, 30, 210), "green": (30, 190, 40), "red": (210, 30, 30)}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These tests use tiny inputs, where threads gain nothing and, on a busy machine, waiting for
    each other costs up to 10x; restore the setting afterwards for other projects' tests."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def colour_folders(tmp_path_factory):
    """A class-folder dataset anyone can learn: 16 noisy 40x40 images per colour."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir()
        for i in range(16):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def colour_names():
    return sorted(COLOURS)
