"""The same seed twice gives the same epoch-1 training loss (model init, split, augmentations in 2 loader
workers all follow --random-state / train.seed)."""
from shared import read_json
from clip_medical import train_clip


def epoch_one_loss(train_argv, out, seed):
    train_clip.main(train_argv(out, "--num-workers", "2", "--augmentation", "standard", "--no-save-best",
                               "--set", f"train.seed={seed}", "--set", "train.limit_train_batches=2"))
    return read_json(out / "history.json")[0]["train/loss"]


def test_the_same_seed_twice_gives_the_same_epoch_one_loss(train_argv, tmp_path):
    first = epoch_one_loss(train_argv, tmp_path / "a", seed=5)
    assert epoch_one_loss(train_argv, tmp_path / "b", seed=5) == first
