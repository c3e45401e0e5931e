"""Nothing silent, nothing lost: a resume writes only into this config's folders and refuses a checkpoint of
other class names; a training batch of one volume never reaches the 3D ResNet's BatchNorm."""

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from alzheimer_mosa import train_mosa
from alzheimer_mosa.model_builder import build_mosa, check_training_batch
from alzheimer_mosa.training import train
from shared import ConfigError, load_checkpoint, run_cli

TINY_ARGS = ["--data.target_size", "[16,16,16]", "--backbone.model_type", "resnet10_3d", "--backbone.width", "8",
             "--mosa.embed_dim", "16", "--mosa.depth", "1", "--mosa.num_heads", "2", "--train.epochs", "2",
             "--train.num_workers", "0", "--train.progress_bar", "false", "--train.mixed_precision", "no"]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file below ``folder``: its SHA-256 and modification time."""
    return {str(path.relative_to(folder)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def cli_error(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_mosa.main, argv)
    return str(exit_info.value.code)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, demo_root, config_factory):
    """A finished one-epoch run (classes CN, AD) in its own folder; the tests resume from it, and it must stay
    byte for byte as it is."""
    root = tmp_path_factory.mktemp("first")
    cfg = config_factory(root, demo_root, train={"epochs": 1}, logging={"hist_interval": 0})
    summary = train(cfg, build_mosa, "mosa")
    return root, cfg, summary


@pytest.mark.parametrize("resume", [["--train.resume", "true"], ["--train.resume_checkpoint", "{ckpt}/checkpoint.pth.tar"]])
def test_a_resume_with_other_class_order_is_refused_and_touches_nothing(first_run, demo_root, resume):
    root, first, _ = first_run
    before = snapshot(root)
    folders = ["--train.output_dir", first.train.output_dir, "--logging.checkpoint_dir", first.logging.checkpoint_dir]
    resume = [arg.format(ckpt=first.logging.checkpoint_dir) for arg in resume]
    message = cli_error(["--data.data_root", str(demo_root), "--data.class_names", "[AD, CN]", *TINY_ARGS, *folders,
                         *resume])
    assert message.startswith("error: CheckpointError: ") and "\n" not in message
    assert "data.class_names ['CN', 'AD']" in message and "['AD', 'CN']" in message
    assert "--data.class_names '[CN, AD]'" in message  # how to go on
    assert snapshot(root) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_resuming_another_folders_checkpoint_is_refused_and_touches_nothing(first_run, demo_root, tmp_path, overwrite):
    """The first run's checkpoint with other folders (and classes): its folder was written to (with
    ``train.overwrite``, deleted) before; now the run is refused up front."""
    root, first, _ = first_run
    before = snapshot(root)
    message = cli_error(["--data.data_root", str(demo_root), "--data.class_names", "[AD, CN]", *TINY_ARGS,
                         "--train.output_dir", str(tmp_path / "logs"), "--logging.checkpoint_dir", str(tmp_path / "ckpt"),
                         "--train.resume_checkpoint", str(Path(first.logging.checkpoint_dir) / "checkpoint.pth.tar"),
                         "--train.overwrite", str(overwrite).lower()])
    assert message.startswith("error: ConfigError: train.resume_checkpoint ") and "\n" not in message
    assert f"is not in logging.checkpoint_dir {tmp_path / 'ckpt'}" in message
    assert f"--logging.checkpoint_dir {first.logging.checkpoint_dir}" in message  # how to go on
    assert snapshot(root) == before
    assert not (tmp_path / "logs").exists() and not (tmp_path / "ckpt").exists()


def test_resuming_the_own_checkpoint_continues_under_this_configs_output_dir(make_config, tmp_path):
    """Same checkpoint folder, another ``train.output_dir``: the run folder's name is kept, but the folder the
    checkpoint was logged to is not written."""
    first = train(make_config(train={"epochs": 1}, logging={"hist_interval": 0}), build_mosa, "mosa")
    before = snapshot(Path(first["log_dir"]))
    cfg = make_config(train={"epochs": 2, "resume": True, "output_dir": str(tmp_path / "moved")},
                      logging={"hist_interval": 0})
    summary = train(cfg, build_mosa, "mosa")
    assert summary["log_dir"] == str(tmp_path / "moved" / Path(first["log_dir"]).name)
    assert summary["global_step"] == 2 * first["global_step"]
    assert snapshot(Path(first["log_dir"])) == before


def test_a_batch_of_one_volume_is_refused_naming_the_key(demo_root, tmp_path):
    message = cli_error(["--data.data_root", str(demo_root), *TINY_ARGS, "--train.batch_size", "1",
                         "--train.output_dir", str(tmp_path / "logs"), "--logging.checkpoint_dir", str(tmp_path / "c")])
    assert message.startswith("error: ConfigError: train.batch_size must be >= 2 here, got 1") and "\n" not in message
    assert "BatchNorm" in message and not (tmp_path / "logs").exists()


def test_the_batch_limit_follows_the_last_stage_size_processes_and_accumulation(make_config):
    check_training_batch(make_config(data={"target_size": [48, 16, 16]}, train={"batch_size": 1}), processes=1)
    with pytest.raises(ConfigError, match="train.batch_size must be >= 4 here, got 3"):
        check_training_batch(make_config(train={"batch_size": 3}), processes=2)
    with pytest.raises(ConfigError, match="train.batch_size must be >= 4 here, got 2"):
        check_training_batch(make_config(train={"batch_size": 2, "grad_accum_steps": 2}), processes=1)


def test_a_last_batch_of_one_volume_never_reaches_the_model(make_config, demo_root, tmp_path):
    """5 training volumes in batches of 4: the last batch would hold one."""
    rows = [{"path": str(p), "label": p.parent.name, "split": p.parent.parent.name}
            for p in sorted(demo_root.glob("[tv]*/*/*.nii.gz"))]
    rows = [r for r in rows if r["split"] == "val"] + [r for r in rows if r["split"] == "train"][:5]
    pd.DataFrame(rows).to_csv(tmp_path / "five.csv", index=False)
    sizes = []

    def recording_mosa(cfg):
        model = build_mosa(cfg)
        model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])) if module.training else None)
        return model

    summary = train(make_config(data={"data_root": str(tmp_path / "five.csv")}, train={"epochs": 1},
                                logging={"hist_interval": 0}), recording_mosa, "mosa")
    assert summary["epochs_run"] == 1 and sizes and min(sizes) >= 2
