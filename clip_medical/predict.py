"""Zero-shot classification of images with a model trained by ``train_clip.py``.

Each image is compared with one text per class: by default the class texts stored in the
checkpoint, or new classes given on the command line (``--class-text NAME=TEXT``, repeatable, or
``--class-texts-file``), which is what a CLIP model allows and a fixed classifier does not.

    python clip_medical/predict.py --checkpoint runs/clip/my_model/checkpoint_best.pth \\
        --images scans/ one_more.png --output predictions.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader

from shared import CheckpointError, DataError, build_image_transform, load_checkpoint, load_model_weights
from shared.data import IMAGE_EXTENSIONS
from clip_medical.data import ImageLabelDataset, load_class_texts_file
from clip_medical.models import CLIPModel, build_clip_model, tokenize
from clip_medical.task import ZeroShotCLIPTask


def load_trained_model(checkpoint: str | Path) -> tuple[CLIPModel, object, dict]:
    """Rebuild the architecture from the checkpoint's config and saved text-encoder directory
    (no download: every weight comes from the checkpoint); returns (model, tokenizer, checkpoint)."""
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    missing = [key for key in ("config", "class_names", "class_texts", "text_encoder_dir") if key not in state]
    if missing:
        raise CheckpointError(f"{checkpoint} is not a train_clip.py checkpoint (missing {missing})")
    cfg = state["config"]
    text_dir = checkpoint.parent / state["text_encoder_dir"]
    if not text_dir.is_dir():
        raise CheckpointError(f"tokenizer/config folder {text_dir} written with {checkpoint.name} is missing")
    model, tokenizer = build_clip_model(cfg["image_encoder_name"], str(text_dir), cfg["embed_dim"], cfg["temperature"],
                                        cfg["img_size"], pretrained_image=False, pretrained_text=False)
    load_model_weights(model, state["model"], source=str(checkpoint))
    return model.eval(), tokenizer, state


def parse_class_texts(pairs: Sequence[str]) -> dict[str, str]:
    texts = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(f"--class-text expects NAME=TEXT, got {pair!r}")
        texts[name.strip()] = text.strip()
    return texts


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
def predict(model: CLIPModel, tokenizer, class_texts: dict[str, str], paths: list[Path], img_size: int,
            batch_size: int = 32, device: str = "cpu") -> pd.DataFrame:
    """One row per image: path, predicted class and the probability of every class."""
    names = list(class_texts)
    task = ZeroShotCLIPTask(tokenize(tokenizer, list(class_texts.values())), names)
    dataset = ImageLabelDataset(paths, [-1] * len(paths), build_image_transform(img_size, train=False))
    model = model.to(device)
    probs = []
    task.on_eval_start(model)
    for images, _ in DataLoader(dataset, batch_size=batch_size):
        logits = task.eval_logits(model, images.to(device))
        probs.append(logits.float().softmax(dim=1).cpu())
    probs = torch.cat(probs).numpy()
    table = pd.DataFrame(probs, columns=[f"prob_{name}" for name in names])
    table.insert(0, "predicted", [names[i] for i in probs.argmax(axis=1)])
    table.insert(0, "path", [str(p) for p in paths])
    return table


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint_best.pth or checkpoint_latest.pth")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--class-text", action="append", default=[], metavar="NAME=TEXT",
                        help="a class and its text; repeat for each class (replaces the trained classes)")
    parser.add_argument("--class-texts-file", default=None,
                        help='JSON {"class": "text"} (replaces the trained classes)')
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=None, help="write the table as CSV here")
    args = parser.parse_args(argv)

    model, tokenizer, state = load_trained_model(args.checkpoint)
    class_texts = dict(state["class_texts"])
    if args.class_texts_file or args.class_text:
        class_texts = load_class_texts_file(args.class_texts_file) if args.class_texts_file else {}
        class_texts.update(parse_class_texts(args.class_text))
    if len(class_texts) < 2:
        raise ValueError(f"zero-shot classification needs at least two classes, got {list(class_texts)}")
    table = predict(model, tokenizer, class_texts, expand_image_paths(args.images), state["config"]["img_size"],
                    args.batch_size, args.device)
    if args.output:
        table.to_csv(args.output, index=False)
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
