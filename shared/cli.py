"""One command line for every entry point: ``parse_cli(ConfigClass, argv)``.

    python PROJECT/train.py [--config FILE] [--section.key VALUE ...] [--set section.key=VALUE ...] [--help]

``--config`` names a YAML file (JSON is YAML too, so the source documents' JSON configs load as they
are); ``--section.key VALUE`` and ``--set section.key=VALUE`` override single keys; a flag without a
value (``--train.ema``) means true. ``--help`` lists every key with its default and its one-line meaning,
read from the comment beside the field in its dataclass, so the documentation cannot drift from the code.

Other spellings of keys (a source document's ``--learning-rate`` for ``train.lr``) are declared by each
project as one alias table: ``{"learning_rate": "train.lr"}``. An alias may also be a true/false switch
that sets a value, in files and on the command line alike: ``{"no_amp": "train.mixed_precision=no"}``,
``{"use_amp": "train.mixed_precision=auto|no"}`` (the second choice when switched off).
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
import sys
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from .config import ConfigError, config_to_dict, load_config

T = TypeVar("T")

_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")


@lru_cache(maxsize=None)
def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` from the ``name: type = default  # comment`` lines of a dataclass's source."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            match = _FIELD_COMMENT.match(line)
            if match:
                comments[match.group(1)] = match.group(2)
    return comments


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    name = getattr(tp, "__name__", None)
    return name.upper() if name in ("int", "float", "str", "bool") else str(tp).replace("typing.", "")


def config_keys(cfg: Any, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """``(dotted key, type, default, meaning)`` for every leaf of a dataclass instance."""
    rows = []
    hints = typing.get_type_hints(type(cfg))
    comments = field_comments(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows += config_keys(value, f"{prefix}{f.name}.")
        else:
            rows.append((prefix + f.name, _type_name(hints[f.name]), value, comments.get(f.name, "")))
    return rows


def help_text(cls: type, defaults: Any, description: str, default_config: str | Path | None,
              aliases: Mapping[str, str]) -> str:
    lines = [description.strip(), "",
             "usage: [--config FILE] [--section.key VALUE ...] [--set section.key=VALUE ...]",
             f"  --config FILE  YAML or JSON settings{f' (default: {default_config})' if default_config else ''}",
             "", "keys (default, meaning):"]
    rows = config_keys(defaults)
    width = max(len(key) for key, *_ in rows) + 2
    for key, type_name, default, meaning in rows:
        shown = config_to_dict(default) if dataclasses.is_dataclass(default) else default
        lines.append(f"  --{key:<{width}} {type_name} = {shown!r}" + (f"  {meaning}" if meaning else ""))
    if aliases:
        lines += ["", "other accepted spellings:"]
        lines += [f"  --{alias.replace('_', '-')} -> {target}" for alias, target in aliases.items()]
    return "\n".join(lines)


def _fill_flag_values(argv: Sequence[str]) -> list[str]:
    """A ``--flag`` followed by another option (or nothing) gets the value ``true``."""
    filled: list[str] = []
    args = list(argv)
    for i, arg in enumerate(args):
        filled.append(arg)
        is_option = arg.startswith("--") and "=" not in arg and arg != "--set"
        next_is_option = i + 1 >= len(args) or args[i + 1].startswith("--")
        if is_option and next_is_option:
            filled.append("true")
    return filled


def parse_cli(cls: type[T], argv: Sequence[str] | None = None, *, description: str = "",
              default_config: str | Path | None = None, aliases: Mapping[str, str] | None = None) -> T:
    """Defaults of ``cls`` <- ``--config`` file (or ``default_config``) <- overrides; ``--help`` exits 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    aliases = dict(aliases or {})
    if "train" in {f.name for f in dataclasses.fields(cls)}:  # every project's config embeds the engine's TrainConfig
        aliases.setdefault("skip_preflight", "train.skip_preflight")
    config_path: str | Path | None = default_config
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            defaults = load_config(cls, default_config) if default_config else cls()
            print(help_text(cls, defaults, description, default_config, aliases))
            raise SystemExit(0)
        if arg == "--config" or arg.startswith("--config="):
            if "=" in arg:
                config_path = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                config_path = argv[i + 1]
                i += 1
            else:
                raise ConfigError("--config needs a file name")
        else:
            rest.append(arg)
        i += 1
    return load_config(cls, config_path, _fill_flag_values(rest), aliases=aliases)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "fix your config, data or checkpoint", not "the code is broken"."""
    from .checkpoint import CheckpointError
    from .data import DataError
    from .engine import NonFiniteLossError
    return ConfigError, DataError, CheckpointError, NonFiniteLossError


def run_cli(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> Any:
    """Run an entry point's ``main(argv)``. A user error ends in one line on stderr (what, where, how to
    fix) and exit code 1, not a chained traceback; ``--debug`` or ``MEDCLS_DEBUG=1`` shows the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MEDCLS_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        return main(argv)
    except user_errors() as err:
        if debug:
            raise
        message = " ".join(str(err).split("\n")[0].split())  # the first line: the one that says what to fix
        more = " (--debug shows the rest)" if "\n" in str(err) else ""
        raise SystemExit(f"error: {type(err).__name__}: {message}{more}") from None
