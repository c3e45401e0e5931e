"""Per-finding probabilities and a spatial-attention heatmap for chest X-ray images.

    python convnext_cxr/predict.py --checkpoint runs/convnext_cxr/checkpoints/checkpoint_best_ema.pth IMAGE...
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from convnext_cxr.model import CXRClassifier, ModelConfig  # noqa: E402
from shared import CheckpointError, build_image_transform, load_checkpoint, load_image, load_model_weights  # noqa: E402


def load_classifier(checkpoint: str | Path) -> tuple[CXRClassifier, list[str], int]:
    """Model (eval mode), finding names and image size from a checkpoint written by train.py."""
    state = load_checkpoint(checkpoint)
    if not state.get("config") or "class_names" not in state:
        raise CheckpointError(f"{checkpoint} was not written by convnext_cxr/train.py (no config/class names)")
    model_cfg = ModelConfig(**{**state["config"]["model"], "pretrained": False})
    findings = list(state["class_names"])
    model = CXRClassifier(model_cfg, num_labels=len(findings))
    load_model_weights(model, state["model"], source=str(checkpoint))
    return model.eval(), findings, int(state["config"]["data"]["image_size"])


def save_heatmap(image: np.ndarray, attention: torch.Tensor, path: Path, title: str) -> None:
    """Overlay the (1, 1, h, w) spatial attention, upsampled to the image, on the grayscale X-ray."""
    heat = F.interpolate(attention, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(image, cmap="gray")
    ax.imshow(heat, cmap="jet", alpha=0.4)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def predict(checkpoint: str | Path, images: Sequence[str | Path], out_dir: str | Path = "predictions") -> dict:
    model, findings, size = load_classifier(checkpoint)
    transform = build_image_transform(size, train=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for path in map(Path, images):
        gray = load_image(path, mode="L")
        outputs = model(transform(gray.convert("RGB")).unsqueeze(0), return_attention=True)
        probs = torch.sigmoid(outputs["logits"])[0].tolist()
        results[str(path)] = dict(zip(findings, probs))
        ranked = sorted(zip(findings, probs), key=lambda item: -item[1])
        print(f"{path}:")
        for name, prob in ranked:
            print(f"  {name:<20s} {prob:.3f}")
        top = ", ".join(f"{n} {p:.2f}" for n, p in ranked[:3])
        save_heatmap(np.asarray(gray), outputs["spatial_attention"], out_dir / f"{path.stem}_heatmap.png", top)
    return results


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint_best_ema.pth or checkpoint_best.pth")
    parser.add_argument("--out-dir", default="predictions", help="where heatmap PNGs go (default: %(default)s)")
    parser.add_argument("images", nargs="+", help="image files")
    args = parser.parse_args(argv)
    return predict(args.checkpoint, args.images, args.out_dir)


if __name__ == "__main__":
    main()
