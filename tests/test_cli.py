"""shared.parse_cli: one command line for every entry point."""
from dataclasses import dataclass, field

import pytest

from shared import ConfigError, TrainConfig, parse_cli
from shared.cli import config_keys


@dataclass
class DataSection:
    root: str = "data"  # folder of class folders
    use_cv: bool = False  # k-fold cross-validation instead of one split
    folds: int = 5  # number of folds when use_cv is on


@dataclass
class RunConfig:
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=TrainConfig)


ALIASES = {"learning_rate": "train.lr", "use_cv": "data.use_cv", "no_amp": "train.mixed_precision=no",
           "use_amp": "train.mixed_precision=auto|no"}


def test_dotted_keys_set_keys_and_value_less_flags():
    cfg = parse_cli(RunConfig, ["--data.folds", "3", "--set", "train.epochs=7", "--data.use_cv",
                                "--train.ema", "false"])
    assert (cfg.data.folds, cfg.train.epochs, cfg.data.use_cv, cfg.train.ema) == (3, 7, True, False)


def test_alias_table_keeps_source_spellings():
    cfg = parse_cli(RunConfig, ["--learning-rate", "3e-4", "--use-cv", "--no-amp"], aliases=ALIASES)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.use_cv is True
    assert cfg.train.mixed_precision == "no"


def test_both_spellings_of_one_key_is_an_error():
    with pytest.raises(ConfigError, match="another name for train.lr"):
        parse_cli(RunConfig, ["--learning-rate", "1e-3", "--train.lr", "1e-4"], aliases=ALIASES)


def test_switch_aliases_on_off_in_files_and_on_the_command_line(tmp_path):
    assert parse_cli(RunConfig, ["--use-amp", "false"], aliases=ALIASES).train.mixed_precision == "no"
    assert parse_cli(RunConfig, ["--use-amp"], aliases=ALIASES).train.mixed_precision == "auto"
    assert parse_cli(RunConfig, ["--no-amp", "false"], aliases=ALIASES).train.mixed_precision == "auto"
    path = tmp_path / "run.yaml"
    path.write_text("use_amp: false\n")
    assert parse_cli(RunConfig, ["--config", str(path)], aliases=ALIASES).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="no_amp: expected true/false, got 'fp16'"):
        parse_cli(RunConfig, ["--no-amp", "fp16"], aliases=ALIASES)
    with pytest.raises(ConfigError, match="give only one of them"):
        parse_cli(RunConfig, ["--use-amp", "--no-amp"], aliases=ALIASES)


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "run.json"  # JSON is YAML: the source documents' JSON configs load as they are
    path.write_text('{"learning_rate": 0.5, "data": {"folds": 4}}')
    cfg = parse_cli(RunConfig, ["--config", str(path), "--data.folds", "2"], aliases=ALIASES)
    assert (cfg.train.lr, cfg.data.folds) == (0.5, 2)


def test_unknown_key_names_the_closest_one():
    with pytest.raises(ConfigError, match="did you mean data.folds"):
        parse_cli(RunConfig, ["--data.fold", "3"])


def test_help_lists_every_key_with_default_and_meaning(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_cli(RunConfig, ["--help"], description="Train a thing.", aliases=ALIASES)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    keys = config_keys(RunConfig())
    assert len(keys) > 30
    for key, _, _, _ in keys:
        assert f"--{key} " in text
    assert "--data.folds" in text and "INT = 5  number of folds when use_cv is on" in text
    assert "--learning-rate -> train.lr" in text


def test_mixed_precision_accepts_yaml_booleans_and_section_aliases_leave_nothing_behind(tmp_path):
    from shared.accelerator import resolve_mixed_precision
    path = tmp_path / "guide.yaml"
    path.write_text("TRAIN:\n  epochs: 3\n  mixed_precision: no\n")  # YAML reads an unquoted no as false
    aliases = {"TRAIN.epochs": "train.epochs", "TRAIN.mixed_precision": "train.mixed_precision"}
    cfg = parse_cli(RunConfig, ["--config", str(path), "--TRAIN.mixed_precision", "true"], aliases=aliases)
    assert cfg.train.epochs == 3 and cfg.train.mixed_precision is True
    assert resolve_mixed_precision(True, cpu=True) == "no" and resolve_mixed_precision(False) == "no"
    assert parse_cli(RunConfig, ["--config", str(path)], aliases=aliases).train.mixed_precision is False
    assert parse_cli(RunConfig, ["--train.mixed_precision", "fp16"]).train.mixed_precision == "fp16"


def test_run_cli_turns_user_errors_into_one_line_and_debug_shows_the_traceback(monkeypatch):
    from shared import DataError, run_cli

    def main(argv):
        if argv == ["boom"]:
            raise DataError("image not found: x.png\nand a second line")
        if argv == ["bug"]:
            raise KeyError("a programming error")
        return argv

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["boom"])
    assert exit_info.value.code == "error: DataError: image not found: x.png (--debug shows the rest)"
    with pytest.raises(DataError, match="second line"):
        run_cli(main, ["boom", "--debug"])
    monkeypatch.setenv("MEDCLS_DEBUG", "1")
    with pytest.raises(DataError):
        run_cli(main, ["boom"])
    with pytest.raises(KeyError):  # a bug is not a user error: its traceback stays
        run_cli(main, ["bug"])
    assert run_cli(main, ["a", "--debug"]) == ["a"]


def test_an_entry_point_reports_a_bad_enum_value_in_one_line_naming_the_key():
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(repo / "convnext_cxr" / "train.py"), "--train.scheduler", "cosin"],
                            capture_output=True, text=True, timeout=120, cwd=repo)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ConfigError: train.scheduler: 'cosin' is not one of ['cosine', 'step', 'plateau', 'none']")
