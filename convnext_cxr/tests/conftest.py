"""Fixtures for convnext_cxr tests: a tiny synthetic ChestX-ray14 set and a tiny model config."""
import pytest

from shared.cxr14_demo import make_synthetic_cxr

TINY_MODEL = ["--model.backbone", "convnext_atto", "--model.pretrained", "false", "--model.embed_dim", "32",
              "--model.num_heads", "2", "--model.head_hidden_dim", "16", "--model.drop_path_rate", "0"]


@pytest.fixture(scope="session")
def tiny_cxr(tmp_path_factory):
    root = tmp_path_factory.mktemp("cxr")
    image_dir, csv_path = make_synthetic_cxr(root, num_images=90, size=32, seed=3)
    return image_dir, csv_path


def _tiny_train_args(image_dir, csv_path, output_dir, epochs=3, extra=()):
    return ["--data.image_dir", str(image_dir), "--data.labels_csv", str(csv_path), "--data.image_size", "32",
            "--data.augmentation", "none", *TINY_MODEL,
            "--train.output_dir", str(output_dir), "--train.epochs", str(epochs), "--train.batch_size", "16",
            "--train.num_workers", "0", "--train.lr", "3e-3", "--train.warmup_epochs", "0.5",
            "--train.mixed_precision", "no", "--train.progress_bar", "false", "--train.ema_decay", "0.9",
            *extra]


@pytest.fixture(scope="session")
def tiny_train_args():
    """Command-line arguments for a seconds-long train.py run on the tiny set."""
    return _tiny_train_args
