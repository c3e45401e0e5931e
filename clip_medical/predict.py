"""Zero-shot classification of images with a model exported by train_clip.py (<run>/export/).

Each image is compared with one text per class: by default the trained class texts stored in the
export, or new classes given on the command line (--class-text.NAME TEXT, repeatable, or
--class-texts-file), which is what a CLIP model allows and a fixed classifier does not.

    python clip_medical/predict.py --export runs/clip/my_model/export --images scans/ --output predictions.csv
    python clip_medical/predict.py --export runs/clip/my_model --images "[a.png, b.png]" \\
        --class-text.正常 "正常胸部" --class-text.异常 "显示病变的胸部"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from shared import CheckpointError, DataError, build_image_transform, load_export, parse_cli, run_cli, write_csv
from shared.data import IMAGE_EXTENSIONS
from clip_medical.data import ImageLabelDataset, load_class_texts_file
from clip_medical.export import ZeroShotClassifier


@dataclass
class PredictConfig:
    export: str = ""  # a run's export/ folder (model.json + model.safetensors), or the run folder holding it
    images: list[str] | str = ""  # an image file or folder (searched recursively), or a list "[a.png, scans/]"
    class_text: dict[str, str] = field(default_factory=dict)  # new classes: --class-text.NAME TEXT (replaces the trained ones)
    class_texts_file: str | None = None  # JSON {"class": "text"} of new classes (replaces the trained ones)
    batch_size: int = 32  # images per forward pass
    device: str = "auto"  # cuda when available, else cpu; or any torch device name
    output: str | None = None  # also write the table as CSV here


def export_folder(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "model.json").is_file() and (path / "export" / "model.json").is_file():
        return path / "export"
    return path


def expand_image_paths(inputs: Sequence[str]) -> list[Path]:
    """Files as given; folders searched recursively for image files."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()))
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"image or folder not found: {item}")
    if not paths:
        raise DataError(f"no image files under {list(inputs)}")
    return paths


@torch.no_grad()
def predict(model: ZeroShotClassifier, class_names: list[str], paths: list[Path], preprocessing: dict,
            batch_size: int = 32, device: str = "cpu") -> pd.DataFrame:
    """One row per image: path, predicted class and the probability of every class. ``preprocessing`` is
    the export's (``model.json``): resize to its size, normalise with its mean and std."""
    transform = build_image_transform(preprocessing["size"][0], train=False, mean=preprocessing["mean"],
                                      std=preprocessing["std"])
    dataset = ImageLabelDataset(paths, [-1] * len(paths), transform)
    model = model.to(device).eval()
    probs = torch.cat([model(images.to(device)).float().softmax(dim=1).cpu()
                       for images, _ in DataLoader(dataset, batch_size=batch_size)]).numpy()
    table = pd.DataFrame(probs, columns=[f"prob_{name}" for name in class_names])
    table.insert(0, "predicted", [class_names[i] for i in probs.argmax(axis=1)])
    table.insert(0, "path", [str(p) for p in paths])
    return table


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    args = parse_cli(PredictConfig, argv, description=__doc__)
    if not args.export or not args.images:
        raise ValueError("--export and --images are required")
    export_dir = export_folder(args.export)
    model, info = load_export(export_dir)
    if info["project"] != "clip_medical":
        raise CheckpointError(f"{export_dir} holds a {info['project']} model, not a clip_medical one")
    class_names = list(info["class_names"])
    if args.class_texts_file or args.class_text:
        class_texts = load_class_texts_file(args.class_texts_file) if args.class_texts_file else {}
        class_texts.update({str(name): str(text) for name, text in args.class_text.items()})
        if len(class_texts) < 2:
            raise ValueError(f"zero-shot classification needs at least two classes, got {list(class_texts)}")
        tokenizer = AutoTokenizer.from_pretrained(export_dir / info["extra"]["tokenizer_dir"])
        model.set_class_texts(tokenizer, list(class_texts.values()))
        class_names = list(class_texts)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    images = [args.images] if isinstance(args.images, str) else args.images
    table = predict(model, class_names, expand_image_paths(images), info["preprocessing"],
                    args.batch_size, device)
    if args.output:
        write_csv(args.output, list(table.columns), table.itertuples(index=False))
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    run_cli(main)
