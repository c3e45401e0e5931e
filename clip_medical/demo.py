"""DEMO ONLY: synthetic class-folder images and a tiny, untrained BERT so the examples run offline.

Nothing here is medical or pretrained. ``bert-base-chinese`` (the default text encoder) cannot be
downloaded on an offline machine, so the demo writes a 2-layer BERT with random weights and a
character vocabulary built from its own class texts, saved as a normal Hugging Face directory that
``--text-encoder`` accepts. The tests use the same helpers.

    python -m clip_medical.demo --output-dir runs/clip_demo
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import BertConfig, BertModel, BertTokenizer

from shared import parse_cli, run_cli, write_json

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

DEMO_CLASS_TEXTS = {
    "正常": "这是一张显示正常解剖结构的胸部X光图像，肺野清晰，没有异常阴影",
    "肺炎": "这是一张显示肺炎病变的胸部X光图像，可见肺部片状炎症阴影",
    "结节": "这是一张显示肺结节的胸部X光图像，可见边界清楚的圆形小阴影",
}


def write_tiny_text_encoder(out_dir: str | Path, texts: list[str], hidden_size: int = 32, num_layers: int = 2,
                            num_heads: int = 2, seed: int = 0, init_std: float = 0.5) -> Path:
    """Save a randomly initialised tiny BERT + tokenizer whose vocab covers every character of ``texts``.

    The vocab file lists the special tokens, each (lower-cased) character of ``texts`` (BERT splits
    Chinese text into single characters) and ASCII letters/digits with their ``##`` word-piece
    forms, so any ASCII word still tokenizes. ``init_std`` is far above BERT's 0.02: with 0.02 every
    text gets the same CLS vector (cosine 0.99999), whereas a pretrained encoder tells them apart.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ascii_chars = string.ascii_lowercase + string.digits
    characters = sorted({ch for text in texts for ch in text.lower() if not ch.isspace()} | set(ascii_chars))
    vocab = SPECIAL_TOKENS + characters + [f"##{ch}" for ch in ascii_chars]
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")

    tokenizer = BertTokenizer(vocab=str(vocab_file))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=2 * hidden_size, max_position_embeddings=256,
                        initializer_range=init_std)
    tokenizer.save_pretrained(out_dir)
    BertModel(config).save_pretrained(out_dir)
    return out_dir


def _synthetic_image(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A grey [size, size] uint8 image: 0 = smooth field, 1 = diffuse bright patches, 2 = small bright spots."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 0.25 + 0.15 * yy + rng.normal(0, 0.03, (size, size))
    spots = {1: (rng.integers(2, 4), 0.18, 0.35), 2: (rng.integers(8, 13), 0.06, 0.6)}
    if kind in spots:
        count, radius, strength = spots[kind]
        for cy, cx in rng.uniform(0.2, 0.8, (count, 2)):
            image += strength * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def write_demo_images(data_dir: str | Path, class_names: list[str], images_per_class: int = 30, size: int = 64,
                      seed: int = 0) -> Path:
    """``data_dir/<class>/<i>.png`` in the guide's class-folder layout (class k gets pattern k % 3)."""
    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    for kind, name in enumerate(class_names):
        folder = data_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            Image.fromarray(_synthetic_image(kind % 3, size, rng)).save(folder / f"{i:03d}.png")
    return data_dir


def write_demo(output_dir: str | Path, images_per_class: int = 30, size: int = 64) -> dict[str, Path]:
    """Demo data, class texts, tiny text encoder and a two-entry multi-config file under ``output_dir``."""
    output_dir = Path(output_dir)
    paths = {
        "data_dir": write_demo_images(output_dir / "data", list(DEMO_CLASS_TEXTS), images_per_class, size),
        "class_texts_file": output_dir / "class_texts.json",
        "text_encoder": write_tiny_text_encoder(output_dir / "text_encoder", list(DEMO_CLASS_TEXTS.values())),
        "config_file": output_dir / "train_clip_config.json",
    }
    write_json(paths["class_texts_file"], DEMO_CLASS_TEXTS)
    tiny = {"text_encoder_name": str(paths["text_encoder"]), "embed_dim": 64, "batch_size": 8, "epochs": 3,
            "learning_rate": 3e-3, "img_size": size, "num_workers": 0, "pretrained": False}
    configs = [{"image_encoder_name": "starnet_dual_pyramid_rcf", **tiny},
               {"image_encoder_name": "resnet18", **tiny, "learning_rate": 1e-3, "augmentation": "minimal"}]
    write_json(paths["config_file"], configs)
    return paths


@dataclass
class DemoConfig:
    output_dir: str = "runs/clip_demo"  # folder for the demo images, class texts, tiny text encoder and config file
    images_per_class: int = 30  # synthetic images in each of the three class folders
    img_size: int = 64  # side of the square images, in pixels


def main(argv: list[str] | None = None) -> None:
    args = parse_cli(DemoConfig, argv, description=__doc__)
    for name, path in write_demo(args.output_dir, args.images_per_class, args.img_size).items():
        print(f"{name}={path}")


if __name__ == "__main__":
    run_cli(main)
