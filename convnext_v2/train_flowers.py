"""The source document's flowers example: fine-tune ConvNeXt on flower photos in class folders.

    python convnext_v2/train_flowers.py [--data-dir ./data/flower_photos] [--model convnextv2_tiny]
        [--pretrained hub] [--image-size 224] [--train.epochs 30] ...
    accelerate launch --multi_gpu --num_processes 8 convnext_v2/train_flowers.py ...

The images are split 70/15/15 (stratified, seeded by ``train.seed``) into train, validation and
test; the model with the best validation accuracy (raw or EMA weights) is evaluated on validation and
test at the end (``results/``) and exported (``export/``, for ``predict_flowers.py``). Any ``train.py``
option and spelling works here too; only the defaults differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from convnext_v2.data import ClassFolderSplit
from convnext_v2.train import RunConfig, default_train_config, main as train_main
from shared import TrainConfig, run_cli


@dataclass
class FlowersConfig(RunConfig):
    data_dir: str = "./data/flower_photos"  # the TensorFlow flower_photos layout: daisy/, dandelion/, roses/, ...
    split: ClassFolderSplit = field(  # train/val/test fractions of data_dir
        default_factory=lambda: ClassFolderSplit(fractions=[0.7, 0.15, 0.15]))
    train: TrainConfig = field(  # the shared training settings
        default_factory=lambda: default_train_config(output_dir="runs/flowers", epochs=30))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return train_main(argv, FlowersConfig, "Fine-tune ConvNeXt V1/V2 on a flower-photo class-folder dataset.")


if __name__ == "__main__":
    run_cli(main)
