"""Per-finding probabilities and a spatial-attention heatmap for chest X-ray images, from train.py's export.

    python convnext_cxr/predict.py --images xray1.png,scans/ [--export_dir runs/convnext_cxr/export] [--out_dir predictions]

Prints every finding's probability (``*`` marks those at or above the validation-tuned threshold) and
writes ``<out_dir>/<image>_heatmap.png`` (the spatial attention over the X-ray) and ``predictions.json``.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import convnext_cxr.model  # noqa: E402,F401  (registers the convnext_cxr export builder)
from shared import (CheckpointError, build_image_transform, load_export, load_image, parse_cli,  # noqa: E402
                    run_cli, write_json)
from shared.data import IMAGE_EXTENSIONS  # noqa: E402
from shared.export import export_thresholds  # noqa: E402


@dataclass
class PredictConfig:
    export_dir: str = "runs/convnext_cxr/export"  # the export/ folder train.py wrote (model.safetensors + model.json)
    images: str = ""  # comma-separated image files, folders (every image inside) or glob patterns
    out_dir: str = "predictions"  # where <image>_heatmap.png and predictions.json are written
    device: str = "cpu"  # cpu | cuda


def image_paths(spec: str) -> list[Path]:
    """The images a comma-separated list of files, folders and glob patterns names, in order."""
    paths: list[Path] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif any(ch in item for ch in "*?["):
            paths += sorted(Path(p) for p in glob.glob(item))
        else:
            paths.append(path)
    if not paths:
        raise SystemExit(f"no images given or found (--images {spec!r}): name files, folders or glob patterns")
    return paths


def save_heatmap(image: np.ndarray, attention: torch.Tensor, path: Path, title: str) -> None:
    """Overlay the (1, 1, h, w) spatial attention, upsampled to the image, on the grayscale X-ray."""
    heat = F.interpolate(attention.float().cpu(), size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(image, cmap="gray")
    ax.imshow(heat.numpy(), cmap="jet", alpha=0.4)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def predict(export_dir: str | Path, images: Sequence[str | Path], out_dir: str | Path = "predictions",
            device: str = "cpu") -> dict:
    model, info = load_export(export_dir, device=device)
    if info["project"] != "convnext_cxr":
        raise CheckpointError(f"{export_dir} holds a {info['project']} model; predict.py needs a convnext_cxr export")
    findings, prep = info["class_names"], info["preprocessing"]
    thresholds = export_thresholds(info)
    transform = build_image_transform(prep["size"][0], train=False, mean=prep["mean"], std=prep["std"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for path in map(Path, images):
        gray = load_image(path, mode="L")
        outputs = model(transform(gray).unsqueeze(0).to(device), return_attention=True)
        probs = torch.sigmoid(outputs["logits"])[0].tolist()
        results[str(path)] = dict(zip(findings, probs))
        ranked = sorted(zip(findings, probs, thresholds), key=lambda item: -item[1])
        print(f"{path}:")
        for name, prob, cut in ranked:
            print(f"  {name:<20s} {prob:.3f}{' *' if prob >= cut else ''}")
        top = ", ".join(f"{n} {p:.2f}" for n, p, _ in ranked[:3])
        save_heatmap(np.asarray(gray), outputs["spatial_attention"], out_dir / f"{path.stem}_heatmap.png", top)
    write_json(out_dir / "predictions.json", {"thresholds": dict(zip(findings, thresholds)), "images": results})
    return results


def main(argv: Sequence[str] | None = None) -> dict:
    cfg = parse_cli(PredictConfig, argv, description=__doc__.split("\n\n")[0])
    return predict(cfg.export_dir, image_paths(cfg.images), cfg.out_dir, cfg.device)


if __name__ == "__main__":
    run_cli(main)
