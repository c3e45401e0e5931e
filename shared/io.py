"""Atomic file writes: a killed process leaves the previous file or the new one, never half of one.

Every JSON and CSV a run writes goes through here, so they all share one behaviour: written to a
temporary name in the same folder and moved into place with ``os.replace``; NaN and infinities become
``null`` (strict JSON readers reject ``NaN``); non-ASCII text (class names, Chinese prompts) is kept;
files get the permissions the user's umask gives (not the 0600 of a temporary file).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write_fn: Callable[[str], None]) -> Path:
    """Call ``write_fn(tmp_path)``, then move the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: teammates on a shared cluster could not read it
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def json_ready(value: Any) -> Any:
    """Plain JSON values: numpy/torch scalars and arrays to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars, torch tensors
        return json_ready(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any, indent: int = 2) -> Path:
    """Atomically write ``data`` as strict JSON (NaN -> null, non-ASCII kept, UTF-8)."""
    text = json.dumps(json_ready(data), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json(path: str | Path, what: str = "JSON file", error: type[Exception] = ValueError) -> Any:
    """Parsed JSON at ``path``; ``error`` naming ``what`` and the file if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise error(f"{what} {path} is not valid JSON: {err}") from None


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 6) -> Path:
    """Atomically write a CSV; floats with ``digits`` significant digits, NaN as an empty cell."""
    def cell(value):
        if isinstance(value, (float, np.floating)):
            return "" if not math.isfinite(value) else f"{float(value):.{digits}g}"
        return value
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([cell(v) for v in row] for row in rows)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue(), encoding="utf-8"))
