"""The same seed twice gives the same epoch-1 training loss (model init, patient split, augmentations in 2
loader workers all follow train.seed)."""
import json

import torch

from convnext_cxr import train


def epoch_one_loss(tiny_cxr, tiny_train_args, out):
    torch.manual_seed(int(torch.randint(1000, ())))  # whatever the global state before main, the seed decides
    args = [a if a != "none" else "standard" for a in tiny_train_args(*tiny_cxr, out, epochs=1)]  # augmentation on
    train.main([*args, "--train.num_workers", "2", "--train.limit_train_batches", "3", "--train.seed", "5",
                "--train.tracker", "none"])
    return json.loads((out / "history.json").read_text())[0]["train/loss"]


def test_the_same_seed_twice_gives_the_same_epoch_one_loss(tiny_cxr, tiny_train_args, tmp_path):
    assert epoch_one_loss(tiny_cxr, tiny_train_args, tmp_path / "a") == epoch_one_loss(tiny_cxr, tiny_train_args,
                                                                                         tmp_path / "b")
