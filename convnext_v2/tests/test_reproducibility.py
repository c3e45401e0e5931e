"""The same seed twice gives the same epoch-1 training loss (model init, split, augmentations in 2 loader
workers, MixUp/CutMix, drop path all follow train.seed)."""
from convnext_v2.train import main


def epoch_one_loss(data_dir, out, seed):
    results = main(["--data-dir", str(data_dir), "--model", "convnextv2_atto", "--image-size", "32",
                    "--train.output_dir", str(out), "--train.epochs", "1", "--train.batch_size", "6",
                    "--train.num_workers", "2", "--train.limit_train_batches", "3", "--train.seed", str(seed),
                    "--train.warmup_epochs", "0", "--train.tracker", "none", "--train.progress_bar", "false",
                    "--train.save_best", "false"])
    return results["history"][0]["train/loss"]


def test_the_same_seed_twice_gives_the_same_epoch_one_loss(colour_folders, tmp_path):
    first = epoch_one_loss(colour_folders, tmp_path / "a", seed=5)
    assert epoch_one_loss(colour_folders, tmp_path / "b", seed=5) == first
