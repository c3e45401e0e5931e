"""The same seed twice gives the same epoch-1 training loss (model init, split, augmentations in 2 loader
workers, MixUp/CutMix, drop path all follow train.seed)."""
import numpy as np
import pytest
from PIL import Image

from convnext_v2.train import main

COLOURS = {"blue": (30, 30, 210), "green": (30, 190, 40), "red": (210, 30, 30)}


@pytest.fixture(scope="module")
def colour_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir()
        for i in range(8):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def epoch_one_loss(data_dir, out, seed):
    results = main(["--data-dir", str(data_dir), "--model", "convnextv2_atto", "--image-size", "32",
                    "--train.output_dir", str(out), "--train.epochs", "1", "--train.batch_size", "6",
                    "--train.num_workers", "2", "--train.limit_train_batches", "3", "--train.seed", str(seed),
                    "--train.warmup_epochs", "0", "--train.tracker", "none", "--train.progress_bar", "false",
                    "--train.save_best", "false"])
    return results["history"][0]["train/loss"]


def test_the_same_seed_twice_gives_the_same_epoch_one_loss(colour_folders, tmp_path):
    first = epoch_one_loss(colour_folders, tmp_path / "a", seed=5)
    assert epoch_one_loss(colour_folders, tmp_path / "b", seed=5) == first
