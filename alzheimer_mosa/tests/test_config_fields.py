"""Every config field changes something observable (table-driven), and bad configs are clear errors.

Each row names a field, a new value, the probe that observes it and, where the field only matters in
some setting (focal ``gamma``, percentile ``percentile_range``...), the base settings that make it
matter. ``test_table_covers_every_field`` keeps the table complete when a field is added.
"""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from alzheimer_mosa.config import Config, config_from_cli
from alzheimer_mosa.data_loader import build_datasets, load_split_records
from alzheimer_mosa.demo_data import DEMO_SPLIT_SIZES, write_demo_dataset
from alzheimer_mosa.prepare_cache import prepare
from alzheimer_mosa.model_builder import build_backbone, build_mosa
from alzheimer_mosa.resnet import build_resnet3d
from alzheimer_mosa.training import build_task, engine_config, train
from shared import ConfigError, config_to_dict


@pytest.fixture(scope="module")
def env(tmp_path_factory, demo_root):
    """Paths the rows refer to: a split-less manifest, two demo folders, two weight files."""
    tmp = tmp_path_factory.mktemp("fields")
    volumes = sorted(demo_root.rglob("*.nii.gz"))
    manifest = tmp / "manifest.csv"
    pd.DataFrame({"path": [str(p) for p in volumes], "label": [p.parent.name for p in volumes],
                  "subject": [f"s{i}" for i in range(len(volumes))]}).to_csv(manifest, index=False)
    for seed, name in enumerate(("demo_a", "demo_b")):
        write_demo_dataset(tmp / name, ["CN", "AD"], DEMO_SPLIT_SIZES, size=8, seed=seed)
    for seed, name in enumerate(("weights_a.pth", "weights_b.pth"), start=1):  # probe_weights inits with seed 0
        torch.manual_seed(seed)
        torch.save({"state_dict": build_resnet3d("resnet10_3d", width=8).state_dict()}, tmp / name)
    return SimpleNamespace(tmp=tmp, demo_root=demo_root, paths={
        "manifest": str(manifest), "demo_a": str(tmp / "demo_a"), "demo_b": str(tmp / "demo_b"),
        "weights_a": str(tmp / "weights_a.pth"), "weights_b": str(tmp / "weights_b.pth"),
        "elsewhere": str(tmp / "elsewhere")})


# ------------------------------------------------------------------------------------------ probes
def probe_engine(cfg, env):
    return config_to_dict(engine_config(cfg))


def probe_model(cfg, env):
    model = build_mosa(cfg)
    return (type(model).__name__, sum(p.numel() for p in model.parameters()), model.backbone.conv1.in_channels,
            model.head[-1].out_features, [m.num_heads for m in model.modules() if hasattr(m, "num_heads")],
            [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)])


def probe_weights(cfg, env):
    torch.manual_seed(0)
    return build_backbone(cfg).layer1[0].conv1.weight.sum().item()


def probe_task(cfg, env):
    """Loss and positive-class recall of fixed predictions (4 samples, 3 right)."""
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.2], [-1.0, 1.5], [0.3, 0.1]])
    outputs = {"logits": logits.numpy(), "targets": np.array([0, 1, 1, 0])}
    metrics = build_task(cfg).compute_metrics(outputs)
    return round(metrics["loss"], 6), metrics["recall"]


def probe_records(cfg, env):
    splits = load_split_records(cfg.data, cfg.train.seed)
    return {split: [(str(r.path), r.label) for r in records] for split, records in splits.items()}


def probe_cache(cfg, env):
    """Which reader each split uses once the cache (if configured) is prepared."""
    if cfg.data.cache_dir:
        prepare(cfg)
    return {split: type(ds.cache).__name__ for split, ds in build_datasets(cfg).items()}


def probe_val_volume(cfg, env):
    return build_datasets(cfg)["val"][0][0].numpy()


def probe_train_volume(cfg, env):
    dataset = build_datasets(cfg)["train"]
    torch.manual_seed(0)
    return dataset[0][0].numpy()


_RUNS: dict[str, tuple] = {}


def probe_run(cfg, env):
    """What a one-epoch run leaves behind: scalar tag groups, histograms, JSONs, folders, checkpoints."""
    key = repr(cfg)
    if key not in _RUNS:
        run = Path(train(cfg, build_mosa, "mosa")["log_dir"])
        events = EventAccumulator(str(run))
        events.Reload()
        tags = events.Tags()
        _RUNS[key] = (sorted({tag.rsplit("/", 1)[0] for tag in tags["scalars"]}), bool(tags["histograms"]),
                      sorted(p.name for p in run.glob("*.json")), str(run.parent),
                      sorted(str(p) for p in Path(cfg.logging.checkpoint_dir).glob("*.pth.tar")))
    return _RUNS[key]


# ------------------------------------------------------------------------------------------- table
AUG_OFF = {"flip_prob": 0.0, "affine_prob": 0.0, "noise_prob": 0.0, "bias_field_prob": 0.0, "gamma_prob": 0.0}
FOCAL = {"loss": {"name": "focal"}}
MANIFEST = {"data": {"data_root": "{manifest}"}}
# the probe runs share one checkpoint folder: each replaces the last (a run is otherwise never overwritten)
RUN = {"train": {"epochs": 1, "output_dir": "{elsewhere}/logs", "overwrite": True},
       "logging": {"checkpoint_dir": "{elsewhere}/ckpt"}}


def only(**augment):
    return {"augment": {**AUG_OFF, **augment}}


ROWS = [
    ("data.data_root", "{manifest}", probe_records, {}),
    ("data.demo_dir", "{demo_b}", probe_records, {"data": {"data_root": "", "demo_dir": "{demo_a}"}}),
    ("data.target_size", [12, 16, 20], probe_val_volume, {}),
    ("data.size_mode", "crop_pad", probe_val_volume, {}),
    ("data.foreground_crop", False, probe_val_volume, {}),
    ("data.foreground_margin", 0, probe_val_volume, {}),
    ("data.normalization", "percentile", probe_val_volume, {}),
    ("data.percentile_range", [5.0, 95.0], probe_val_volume, {"data": {"normalization": "percentile"}}),
    ("data.class_names", ["AD", "CN"], probe_records, {}),
    ("data.cache_dir", "{elsewhere}/volume_cache", probe_cache, {}),
    ("data.positive_class", "CN", probe_task, {}),
    ("data.val_fraction", 0.3, probe_records, MANIFEST),
    ("data.test_fraction", 0.3, probe_records, MANIFEST),
    ("augment.flip_prob", 1.0, probe_train_volume, only()),
    ("augment.flip_axes", [1], probe_train_volume, only(flip_prob=1.0)),
    ("augment.affine_prob", 1.0, probe_train_volume, only()),
    ("augment.affine_scale", 0.3, probe_train_volume, only(affine_prob=1.0)),
    ("augment.affine_degrees", 30.0, probe_train_volume, only(affine_prob=1.0)),
    ("augment.affine_translation", 8.0, probe_train_volume, only(affine_prob=1.0)),
    ("augment.noise_prob", 1.0, probe_train_volume, only()),
    ("augment.noise_std", 0.5, probe_train_volume, only(noise_prob=1.0)),
    ("augment.bias_field_prob", 1.0, probe_train_volume, only()),
    ("augment.bias_field_coefficients", 0.8, probe_train_volume, only(bias_field_prob=1.0)),
    ("augment.gamma_prob", 1.0, probe_train_volume, only()),
    ("augment.log_gamma", 0.6, probe_train_volume, only(gamma_prob=1.0)),
    ("backbone.model_type", "resnet18_3d", probe_model, {}),
    ("backbone.pretrained", True, probe_weights, {"backbone": {"pretrained_path": "{weights_a}"}}),
    ("backbone.pretrained_path", "{weights_b}", probe_weights,
     {"backbone": {"pretrained": True, "pretrained_path": "{weights_a}"}}),
    ("backbone.freeze_epochs", 2, probe_engine, {}),  # DDP must tolerate the frozen parameters
    ("backbone.width", 16, probe_model, {}),
    ("backbone.in_channels", 2, probe_model, {}),
    ("backbone.num_classes", 3, probe_model, {}),
    ("mosa.use_shared_transformer", True, probe_model, {}),
    ("mosa.embed_dim", 32, probe_model, {}),
    ("mosa.depth", 2, probe_model, {}),
    ("mosa.num_heads", 4, probe_model, {}),
    ("mosa.mlp_ratio", 2.0, probe_model, {}),
    ("mosa.qkv_bias", False, probe_model, {}),
    ("mosa.drop_rate", 0.3, probe_model, {}),
    ("mosa.attn_drop_rate", 0.2, probe_model, {}),
    ("loss.name", "focal", probe_task, {}),
    ("loss.alpha", [0.25, 0.75], probe_task, FOCAL),
    ("loss.gamma", 1.0, probe_task, FOCAL),
    ("loss.label_smoothing", 0.1, probe_task, {}),
    ("train.batch_size", 2, probe_engine, {}),
    ("train.num_workers", 1, probe_engine, {}),
    ("train.optimizer", "sgd", probe_engine, {}),
    ("train.lr", 0.01, probe_engine, {}),
    ("train.min_lr", 1e-5, probe_engine, {}),
    ("train.weight_decay", 0.1, probe_engine, {}),
    ("train.momentum", 0.5, probe_engine, {}),
    ("train.scheduler", "step", probe_engine, {}),
    ("train.decay_epochs", 3.0, probe_engine, {}),
    ("train.decay_rate", 0.5, probe_engine, {}),
    ("train.warmup_epochs", 2.0, probe_engine, {}),
    ("train.epochs", 5, probe_engine, {}),
    ("train.grad_clip", 0.0, probe_engine, {}),
    ("train.early_stopping.monitor", "val/accuracy", probe_engine, {}),
    ("train.early_stopping.mode", "max", probe_engine, {}),
    ("train.early_stopping.patience", 3, probe_engine, {}),
    ("train.mixed_precision", "bf16", probe_engine, {}),
    ("train.seed", 7, probe_engine, {}),
    ("train.resume_checkpoint", "{elsewhere}/checkpoint.pth.tar", probe_engine, {}),
    ("train.output_dir", "{elsewhere}/other_logs", probe_run, RUN),
    ("train.save_every", 2, probe_engine, {}),
    ("train.progress_bar", True, probe_engine, {}),
    ("logging.checkpoint_dir", "{elsewhere}/other_ckpt", probe_run, RUN),
    ("logging.batch_metrics", False, probe_run, RUN),
    ("logging.hist_interval", 0, probe_run, RUN),
    ("logging.export_per_class", False, probe_run, RUN),
]


def leaf_fields(cls, prefix="") -> set[str]:
    names = set()
    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        names |= leaf_fields(type(default), f"{prefix}{f.name}.") if dataclasses.is_dataclass(default) else {prefix + f.name}
    return names


def test_table_covers_every_field():
    """Every project field has a row. The shared ``train`` section reaches the Engine as it is (next
    test), and the shared engine's tests cover what each of its keys does; the rows above for ``train.*``
    are the keys this project had under other names."""
    rows, fields = {row[0] for row in ROWS}, leaf_fields(Config)
    assert rows <= fields
    assert sorted(rows - {f for f in fields if f.startswith("train.")}) == sorted(f for f in fields if not f.startswith("train."))


def test_train_section_reaches_the_engine_as_it_is():
    cfg = Config()
    assert engine_config(cfg) == cfg.train  # only a resume path and a frozen backbone derive anything
    derived = engine_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume_checkpoint="c.pth.tar")))
    assert derived.resume and derived.resume_checkpoint == "c.pth.tar"


def _fill(value, paths):
    return value.format(**paths) if isinstance(value, str) else value


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a.shape == b.shape and np.allclose(a, b)
    return a == b


@pytest.mark.parametrize("key,value,probe,base", ROWS, ids=[row[0] for row in ROWS])
def test_field_changes_something(key, value, probe, base, env, config_factory):
    section, *path = key.split(".")
    base = {s: {k: _fill(v, env.paths) for k, v in values.items()} for s, values in base.items()}
    changed = {s: dict(values) for s, values in base.items()}
    node = changed.setdefault(section, {})
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = _fill(value, env.paths)
    before = probe(config_factory(env.tmp, env.demo_root, **base), env)
    after = probe(config_factory(env.tmp, env.demo_root, **changed), env)
    assert not _same(before, after), f"{key}={value!r} changed nothing that {probe.__name__} sees"


# ------------------------------------------------------------------------------------------ errors
def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['train.lrr'\].*train.lr"):
        config_from_cli(Config, ["--train.lrr", "1e-3"])


def test_yaml_file_and_command_line_overrides(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("train:\n  lr: 0.001\n  epochs: 3\nmosa:\n  depth: 4\n")
    cfg = config_from_cli(Config, ["--config", str(yaml_file), "--train.epochs", "7", "--set", "mosa.qkv_bias=false"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.mosa.depth, cfg.mosa.qkv_bias) == (1e-3, 7, 4, False)


@pytest.mark.parametrize("argv,message", [
    (["--backbone.num_classes", "3"], "num_classes=3 but data.class_names has 2"),
    (["--data.positive_class", "MCI"], "positive_class='MCI' is not in"),
    (["--backbone.pretrained", "true"], "needs backbone.pretrained_path"),
    (["--mosa.num_heads", "3"], "not divisible by mosa.num_heads=3"),
    (["--loss.alpha", "[0.5]"], "alpha has 1 values for 2 classes"),
    (["--data.target_size", "[64, 64]"], "target_size must be three sizes"),
    (["--train.optimizer", "lion"], "'lion' is not one of"),
])
def test_inconsistent_settings_are_clear_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        config_from_cli(Config, argv)
