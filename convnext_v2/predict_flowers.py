"""Classify one image with a checkpoint from ``train_flowers.py`` / ``train.py``.

    python convnext_v2/predict_flowers.py --image photo.jpg --model runs/flowers/checkpoints/checkpoint_best_ema.pth
        [--cpu] [--model_type v1|v2] [--top-k 5] [--output photo_prediction.png]

Prints the top-k classes with their probabilities and saves the image next to a bar chart of them.
The checkpoint carries the model name, class names and image size, so nothing else is needed;
``--model_type`` only checks that the checkpoint holds the family you expect.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from convnext_v2.data import build_eval_transform  # noqa: E402
from convnext_v2.model import create_model, model_family  # noqa: E402
from shared import CheckpointError, load_checkpoint, load_image, load_model_weights  # noqa: E402

REQUIRED_KEYS = ("model", "model_name", "class_names")


def load_classifier(path: str | Path, device: torch.device, model_type: str | None = None) -> tuple[nn.Module, dict]:
    """The model in eval mode on ``device``, and the checkpoint (for its class names and image size)."""
    checkpoint = load_checkpoint(path)
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a convnext_v2 training checkpoint: it lacks {missing}")
    name = checkpoint["model_name"]
    if model_type is not None and model_family(name) != model_type:
        raise ValueError(f"--model_type {model_type}, but {path} holds {name}, a {model_family(name)} model")
    model = create_model(name, num_classes=len(checkpoint["class_names"]))
    load_model_weights(model, checkpoint["model"], source=str(path))
    return model.eval().to(device), checkpoint


@torch.no_grad()
def predict(model: nn.Module, image: Image.Image, image_size: int, class_names: Sequence[str],
            top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` (class name, probability) pairs, most likely first."""
    device = next(model.parameters()).device
    x = build_eval_transform(image_size)(image).unsqueeze(0).to(device)  # (3, S, S) -> (1, 3, S, S)
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
    parser = argparse.ArgumentParser(description="Classify an image with a trained ConvNeXt checkpoint.")
    parser.add_argument("--image", required=True, help="image file to classify")
    parser.add_argument("--model", required=True, help="checkpoint (.pth) written by train_flowers.py / train.py")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is available")
    parser.add_argument("--model_type", choices=["v1", "v2"], help="check that the checkpoint holds this family")
    parser.add_argument("--top-k", type=int, default=5, help="how many classes to show (default: %(default)s)")
    parser.add_argument("--output", help="bar-chart PNG (default: <image name>_prediction.png here)")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    model, checkpoint = load_classifier(args.model, device, args.model_type)
    image = load_image(args.image)
    top = predict(model, image, checkpoint.get("image_size", 224), checkpoint["class_names"], args.top_k)
    for rank, (name, probability) in enumerate(top, start=1):
        print(f"{rank}. {name:<20} {probability:.4f}")
    output = plot_prediction(image, top, args.output or f"{Path(args.image).stem}_prediction.png")
    print(f"bar chart: {output}")
    return top


if __name__ == "__main__":
    main()
