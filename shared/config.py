"""One config system for every project: typed dataclasses, YAML files, command-line overrides.

A project describes its settings as nested dataclasses. ``load_config`` starts from the dataclass
defaults, applies a YAML file, then command-line overrides written either as ``--train.lr 3e-4`` or
``--set train.lr=3e-4``. Unknown keys are rejected with the closest valid key and the list of valid
ones, so a typo never silently trains with a default. A project may accept other spellings of its keys
(a source document's ``learning_rate`` for ``train.lr``) through an alias table, declared as data.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


class _CommandLineText(str):
    """An override as typed: kept verbatim for ``str`` fields (so ``no`` stays "no"), else parsed as YAML."""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML-parsed value to the annotated type, or raise a ConfigError naming the key."""
    if isinstance(value, _CommandLineText):
        value = str(value) if tp is str else (yaml.safe_load(value) if value != "" else "")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if _is_dataclass_type(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {sorted(_field_types(tp))}, got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _build(cls: type[T], values: dict, prefix: str = "") -> T:
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        hints = [f"did you mean {prefix + close[0]}?" for key in unknown
                 for close in [difflib.get_close_matches(key, list(types_), n=1, cutoff=0.5)] if close]
        raise ConfigError(
            f"unknown config key(s) {[prefix + k for k in unknown]}; {' '.join(hints + [''])}"
            f"valid keys here: {[prefix + k for k in sorted(types_)]}"
        )
    base = cls()
    kwargs = {}
    for name, tp in types_.items():
        if name not in values:
            continue
        if _is_dataclass_type(tp) and isinstance(values[name], dict):
            current = config_to_dict(getattr(base, name))
            kwargs[name] = _build(tp, _deep_merge(current, values[name]), prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(values[name], tp, prefix + name)
    return dataclasses.replace(base, **kwargs)


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_to_dict(cfg: Any) -> dict:
    """Dataclass -> plain nested dict (lists instead of tuples) that YAML and JSON can hold."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(cfg)


def parse_overrides(argv: Sequence[str]) -> dict:
    """Turn ``--a.b VALUE`` / ``--a.b=VALUE`` / ``--set a.b=VALUE`` into a nested dict of values
    (parsed as YAML once the target field's type is known)."""
    nested: dict = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--set":
            if i + 1 >= len(args) or "=" not in args[i + 1]:
                raise ConfigError("--set needs KEY=VALUE, e.g. --set train.lr=3e-4")
            key, raw = args[i + 1].split("=", 1)
            i += 2
        elif arg.startswith("--"):
            if "=" in arg:
                key, raw = arg[2:].split("=", 1)
                i += 1
            else:
                if i + 1 >= len(args):
                    raise ConfigError(f"{arg} needs a value")
                key, raw = arg[2:], args[i + 1]
                i += 2
        else:
            raise ConfigError(f"unexpected argument {arg!r}: use --key value or --set key=value")
        value = _CommandLineText(raw)
        node = nested
        parts = key.replace("-", "_").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r} conflicts with another override")
        node[parts[-1]] = value
    return nested


#: What :func:`switch_value` returns for a switch turned off that has no second choice: leave the key alone.
UNSET = object()


def switch_value(alias: str, canonical: str, value: Any) -> Any:
    """The value a switch alias (``"use_amp": "train.mixed_precision=auto|no"``) sets: the first
    choice when on, the second (if any) when off; ``UNSET`` for an off switch with no second choice."""
    on_value, _, off_value = canonical.split("=", 1)[1].partition("|")
    on = _coerce(value, bool, alias) if not isinstance(value, bool) else value
    if on:
        return on_value
    return off_value if off_value else UNSET


def _drop_empty(values: dict, parents: Sequence[str]) -> None:
    """Remove the emptied section ``parents`` (and any parent it leaves empty) from ``values``."""
    for depth in range(len(parents), 0, -1):
        *above, name = parents[:depth]
        node = values
        for part in above:
            node = node[part]
        if node.get(name) == {}:
            del node[name]


def apply_aliases(values: dict, aliases: Mapping[str, str]) -> dict:
    """Rename the dotted keys of ``aliases`` (alias -> canonical key) in a nested mapping of settings.

    A canonical key with a value, ``"no_amp": "train.mixed_precision=no"`` or
    ``"use_amp": "train.mixed_precision=auto|no"``, makes the alias a true/false switch that sets it.
    Giving two spellings of one key is an error rather than a silent choice between them.
    """
    values = _deep_merge({}, values)
    for alias, canonical in aliases.items():
        *parents, leaf = alias.split(".")
        node = values
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        if parents and not node:  # ``TRAIN.epochs -> train.epochs`` leaves no empty ``TRAIN: {}`` behind
            _drop_empty(values, parents)
        if "=" in canonical:
            value = switch_value(alias, canonical, value)
            canonical = canonical.split("=", 1)[0]
            if value is UNSET:
                continue
        *target_parents, target_leaf = canonical.split(".")
        target = values
        for part in target_parents:
            target = target.setdefault(part, {})
        if target_leaf in target:
            raise ConfigError(f"{alias} is another name for {canonical}; give only one of them")
        target[target_leaf] = value
    return values


def load_config(cls: type[T], path: str | Path | None = None, argv: Sequence[str] = (),
                aliases: Mapping[str, str] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file at ``path`` <- command-line overrides in ``argv``.

    ``aliases`` maps other spellings of keys to their dotted names, e.g. ``{"train.learning_rate": "train.lr"}``;
    they are accepted in the YAML file and on the command line alike.
    """
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        values = loaded
    try:
        values = apply_aliases(values, aliases or {})
        values = _deep_merge(values, apply_aliases(parse_overrides(argv), aliases or {}))
        return _build(cls, values)
    except ConfigError as err:
        where = f" (from {path} and command line)" if path else ""
        raise ConfigError(f"{err}{where}") from None


def config_from_dict(cls: type[T], values: dict) -> T:
    """Defaults of ``cls`` <- a nested mapping (e.g. one entry of a JSON file), checked like a YAML file."""
    if not isinstance(values, dict):
        raise ConfigError(f"expected a mapping of {cls.__name__} keys, got {type(values).__name__}")
    return _build(cls, values)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML so a run folder says exactly how it was trained."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
