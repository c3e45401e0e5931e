"""Train Mosa (3D ResNet + multi-scale transformer) on NIfTI volumes.

    python alzheimer_mosa/train_mosa.py [--config run.yaml] [--train.lr 5e-5 ...] [--set mosa.depth=4]
    accelerate launch --multi_gpu --num_processes 8 alzheimer_mosa/train_mosa.py --data.data_root DATA

Without ``data.data_root`` it trains on a small synthetic demo set. ``--help`` lists every option.
"""

from alzheimer_mosa.config import Config
from alzheimer_mosa.model_builder import build_mosa
from alzheimer_mosa.training import main as train_main
from shared import run_cli


def main(argv=None) -> dict:
    return train_main(Config, build_mosa, run_name="mosa", argv=argv, description=__doc__)


if __name__ == "__main__":
    run_cli(main)
