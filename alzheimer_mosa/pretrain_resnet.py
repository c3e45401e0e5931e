"""Train the 3D ResNet alone (checkpoints in ``checkpoints/resnet3d`` by default).

    python alzheimer_mosa/pretrain_resnet.py [--config run.yaml] [--backbone.model_type resnet50_3d ...]

Mosa can then start from it: ``train_mosa.py --backbone.pretrained --backbone.pretrained_path
checkpoints/resnet3d/model_best.pth.tar [--backbone.freeze_epochs 2]``. ``--help`` lists every option.
"""

from alzheimer_mosa.config import PretrainConfig
from alzheimer_mosa.model_builder import build_backbone
from alzheimer_mosa.training import main as train_main
from shared import run_cli


def main(argv=None) -> dict:
    return train_main(PretrainConfig, build_backbone, run_name="resnet3d", argv=argv, description=__doc__)


if __name__ == "__main__":
    run_cli(main)
