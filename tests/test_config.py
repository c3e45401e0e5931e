"""The shared config system: YAML, command-line overrides, rejection of unknown keys, saved copy."""
from dataclasses import dataclass, field

import pytest
import yaml

from shared import ConfigError, TrainConfig, load_config, save_config


@dataclass
class Model:
    name: str = "convnext_tiny"
    layers: list[int] = field(default_factory=lambda: [2, 2])
    dropout: float = 0.1


@dataclass
class Root:
    model: Model = field(default_factory=Model)
    train: TrainConfig = field(default_factory=TrainConfig)


def test_yaml_then_overrides_in_both_syntaxes(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: resnet18\ntrain:\n  lr: 0.01\n  early_stopping:\n    patience: 3\n")
    cfg = load_config(Root, path, ["--train.lr", "3e-4", "--set", "model.layers=[1,2,3]",
                                   "--train.early_stopping.mode=max", "--train.ema", "false"])
    assert cfg.model.name == "resnet18"
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.layers == [1, 2, 3]
    assert cfg.train.early_stopping.patience == 3 and cfg.train.early_stopping.mode == "max"
    assert cfg.train.ema is False
    assert cfg.model.dropout == 0.1  # untouched default


def test_unknown_key_is_rejected_with_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(Root, None, ["--train.learning_rate", "1e-3"])
    assert "train.learning_rate" in str(err.value) and "train.lr" in str(err.value)
    with pytest.raises(ConfigError, match="model.dropout"):
        load_config(Root, None, ["--set", "model.dropuot=0.5"])


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(Root, None, ["--train.epochs", "many"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(Root, None, ["--train.lr", "0.5"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["lr"] == 0.5
    assert load_config(Root, tmp_path / "run" / "config.yaml") == cfg


ALIASES = {"learning_rate": "train.lr", "train.learning_rate": "train.lr", "train.num_epochs": "train.epochs"}


def test_aliases_rename_keys_in_files_and_on_the_command_line(tmp_path):
    path = tmp_path / "source.yaml"
    path.write_text("learning_rate: 0.25\ntrain:\n  num_epochs: 7\n")
    cfg = load_config(Root, path, ["--train.learning_rate", "0.5"], aliases=ALIASES)
    assert (cfg.train.lr, cfg.train.epochs) == (0.5, 7)  # the command line still wins over the file
    assert load_config(Root, path, aliases=ALIASES).train.lr == 0.25
    with pytest.raises(ConfigError, match="train.learning_rate is another name for train.lr"):
        load_config(Root, None, ["--train.learning_rate", "1", "--train.lr", "2"], aliases=ALIASES)
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(Root, path)  # without the table the source spellings stay unknown


def test_unknown_key_suggests_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"did you mean train\.epochs\?"):
        load_config(Root, None, ["--train.epoch", "3"])
