"""Shared fixtures: a tiny BERT whose tokenizer comes from a vocab file written here (Chinese
characters included), and a small class-folder dataset of 32 px images."""
from pathlib import Path

import pytest
import torch

from shared import write_json
from clip_medical.demo import write_demo_images, write_tiny_text_encoder

CLASS_TEXTS = {
    "正常": "这是一张显示正常解剖结构的胸部X光图像",
    "肺炎": "这是一张显示肺炎病变的胸部X光图像",
}
IMAGES_PER_CLASS = 9
IMG_SIZE = 32


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared 2-core box


@pytest.fixture(scope="session")
def text_encoder_dir(tmp_path_factory) -> Path:
    return write_tiny_text_encoder(tmp_path_factory.mktemp("text_encoder"), list(CLASS_TEXTS.values()), hidden_size=16)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return write_demo_images(tmp_path_factory.mktemp("data") / "images", list(CLASS_TEXTS), IMAGES_PER_CLASS, IMG_SIZE)


@pytest.fixture(scope="session")
def class_texts() -> dict[str, str]:
    return dict(CLASS_TEXTS)


@pytest.fixture(scope="session")
def class_texts_file(tmp_path_factory) -> Path:
    return write_json(tmp_path_factory.mktemp("texts") / "class_texts.json", CLASS_TEXTS)


@pytest.fixture
def train_argv(data_dir, text_encoder_dir, class_texts_file):
    """``train_argv(output_dir, *extra)``: tiny, fast, offline settings for ``train_clip.main``."""
    def build(output_dir, *extra):
        return ["--data-dir", str(data_dir), "--output-dir", str(output_dir), "--text-encoder", str(text_encoder_dir),
                "--class-texts-file", str(class_texts_file), "--embed-dim", "16", "--batch-size", "6",
                "--epochs", "1", "--img-size", str(IMG_SIZE), "--num-workers", "0", "--no-pretrained",
                "--learning-rate", "1e-3", *extra]
    return build
