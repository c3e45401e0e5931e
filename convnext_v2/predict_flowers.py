"""Classify one image with the model ``train_flowers.py`` / ``train.py`` exported.

    python convnext_v2/predict_flowers.py --image photo.jpg --model runs/flowers/export
        [--cpu] [--model_type v1|v2] [--top-k 5] [--output photo_prediction.png]

Prints the top-k classes with their probabilities and saves the image next to a bar chart of them.
``--model`` is an export folder (``model.safetensors`` + ``model.json``, the format every project writes)
or the run folder holding ``export/``; ``model.json`` carries the architecture, the class names and the
preprocessing, so nothing else is needed. ``--model_type`` only checks that it holds the family you expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from shared import (CheckpointError, ConfigError, build_image_transform, load_export, load_image, parse_cli,
                    read_export_info, run_cli)


@dataclass
class PredictConfig:
    image: str = ""  # image file to classify (required)
    model: str = ""  # export folder written by train.py / train_flowers.py, or the run folder holding export/
    cpu: bool = False  # run on the CPU even when a GPU is available
    model_type: Literal["", "v1", "v2"] = ""  # check that the export holds this family ("" = either)
    top_k: int = 5  # how many classes to show
    output: str = ""  # bar-chart PNG ("" = <image name>_prediction.png in the current folder)


def load_classifier(path: str | Path, device: torch.device, model_type: str = "") -> tuple[nn.Module, dict]:
    """The exported model in eval mode on ``device``, and its ``model.json`` (class names, preprocessing)."""
    path = Path(path)
    if (path / "export" / "model.json").is_file():
        path = path / "export"
    info = read_export_info(path)
    if info["project"] != "convnext_v2":
        raise CheckpointError(f"{path} holds a {info['project']} model, not a convnext_v2 classifier")
    family, name = info["architecture"]["family"], info["architecture"].get("model_name") or "a custom size"
    if model_type and family != model_type:
        raise ValueError(f"--model_type {model_type}, but {path} holds {name}, a {family} model")
    return load_export(path, device)


def eval_transform(info: dict):
    """PIL image -> the normalised tensor the exported model expects (its ``preprocessing``)."""
    pre = info["preprocessing"]
    return build_image_transform(pre["size"][0], train=False, mean=pre["mean"], std=pre["std"])


@torch.no_grad()
def predict(model: nn.Module, image: Image.Image, transform, class_names: Sequence[str],
            top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` (class name, probability) pairs, most likely first."""
    device = next(model.parameters()).device
    x = transform(image).unsqueeze(0).to(device)  # (3, S, S) -> (1, 3, S, S)
    probabilities = model(x).float().softmax(dim=-1)[0]  # (num_classes,)
    values, indices = probabilities.topk(min(top_k, len(class_names)))
    return [(class_names[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]


def plot_prediction(image: Image.Image, top: Sequence[tuple[str, float]], path: str | Path) -> Path:
    """The image beside a horizontal bar chart of the top-k probabilities."""
    fig, (image_ax, bar_ax) = plt.subplots(1, 2, figsize=(9, 3.5), gridspec_kw={"width_ratios": [1, 1.4]})
    image_ax.imshow(image)
    image_ax.axis("off")
    image_ax.set_title(f"{top[0][0]} ({top[0][1]:.1%})")
    names, probabilities = zip(*reversed(top))  # most likely on top
    bars = bar_ax.barh(names, probabilities, color="tab:blue")
    bar_ax.bar_label(bars, labels=[f"{p:.1%}" for p in probabilities], padding=3)
    bar_ax.set(xlim=(0, 1.15), xlabel="probability", title=f"top-{len(top)} classes")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> list[tuple[str, float]]:
    cfg = parse_cli(PredictConfig, argv, description="Classify an image with an exported ConvNeXt classifier.")
    if not cfg.image or not cfg.model:
        raise ConfigError("--image and --model are required (an image file and an export folder)")
    device = torch.device("cuda" if torch.cuda.is_available() and not cfg.cpu else "cpu")
    model, info = load_classifier(cfg.model, device, cfg.model_type)
    image = load_image(cfg.image)
    top = predict(model, image, eval_transform(info), info["class_names"], cfg.top_k)
    for rank, (name, probability) in enumerate(top, start=1):
        print(f"{rank}. {name:<20} {probability:.4f}")
    output = plot_prediction(image, top, cfg.output or f"{Path(cfg.image).stem}_prediction.png")
    print(f"bar chart: {output}")
    return top


if __name__ == "__main__":
    run_cli(main)
