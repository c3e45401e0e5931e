"""The same seed twice gives the same epoch-1 training loss (model init, split, torchio augmentations in 2
loader workers all follow train.seed)."""
import json
from pathlib import Path

from alzheimer_mosa.model_builder import build_mosa
from alzheimer_mosa.training import train


def epoch_one_loss(make_config, name):
    cfg = make_config(train={"epochs": 1, "num_workers": 2, "seed": 5, "save_best": False},
                      logging={"hist_interval": 0, "checkpoint_dir": str(Path(make_config().train.output_dir) / name)})
    cfg.train.output_dir = str(Path(cfg.train.output_dir) / name)
    summary = train(cfg, build_mosa, "mosa")
    return json.loads((Path(summary["log_dir"]) / "history.json").read_text())[0]["train/loss"]


def test_the_same_seed_twice_gives_the_same_epoch_one_loss(make_config):
    assert epoch_one_loss(make_config, "a") == epoch_one_loss(make_config, "b")
