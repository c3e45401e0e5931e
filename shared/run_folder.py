"""A run's folders at start-up: nothing silent, nothing lost.

A folder holds a run when its checkpoint folder has one of the engine's checkpoints or it has
``history.json``. A new run there is refused with :class:`RunExistsError` (one line: what is there and how to
go on) unless ``train.resume`` continues that run or ``train.overwrite`` starts afresh, which first deletes
the old run's checkpoints, ``history.json``, ``split.csv``, TensorBoard event files, ``results/`` and
``export/``. A resume writes only into the run it continues: resuming another folder's checkpoint into a
folder that holds a run is refused the same way.

Temporary files that a killed atomic write left behind (``.<name>.<random>.tmp``, see
:func:`shared.io.atomic_write`) are removed from the checkpoint and output folders, with a line saying how
many bytes that freed.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError
from .preflight import SPLIT_FILE
from .resume import is_own_checkpoint, resume_path

if TYPE_CHECKING:
    from .engine import Engine
    from .train_config import TrainConfig


class RunExistsError(ConfigError):
    """The output folder already holds a run, and neither ``train.resume`` nor ``train.overwrite`` was given."""


def run_files(engine: "Engine") -> list[Path]:
    """The files that make ``engine``'s folders hold a run: its checkpoints and ``history.json``."""
    candidates = [engine.checkpoint_path(kind) for kind in engine.checkpoint_names]
    return [path for path in dict.fromkeys([*candidates, engine.output_dir / "history.json"]) if path.is_file()]


def remove_stale_temp_files(*folders: Path) -> int:
    """Delete the ``.<name>.*.tmp`` files of killed atomic writes in ``folders`` (not below them); prints
    what it removed and returns the number of bytes freed."""
    count = size = 0
    for folder in dict.fromkeys(Path(f) for f in folders):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(".*.tmp")):
            try:
                bytes_ = path.stat().st_size
                path.unlink()
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                continue
            count, size = count + 1, size + bytes_
    if count:
        where = ", ".join(str(f) for f in dict.fromkeys(Path(f) for f in folders))
        print(f"removed {count} stale temporary file(s) left by an interrupted write ({size} bytes) in {where}",
              flush=True)
    return size


def refuse_existing_runs(folder: Path, cfg: "TrainConfig") -> None:
    """For scripts that write into ``folder`` before an Engine starts (a config copy, CV folds below it):
    the same refusal, up front, when ``folder`` or a folder below it holds a run."""
    if cfg.resume or cfg.overwrite or not Path(folder).is_dir():
        return
    found = sorted(p for pattern in ("history.json", "checkpoint_*.pth") for p in Path(folder).rglob(pattern))
    if found:
        raise RunExistsError(f"not starting a new run in {folder}: a run is already there "
                             f"({', '.join(str(p) for p in found[:3])}{' ...' if len(found) > 3 else ''}); pass "
                             f"--train.resume true to continue it or --train.overwrite true to start over, "
                             f"or choose another output folder")


def _refusal(engine: "Engine", existing: list[Path], why: str,
             resume: str = "--train.resume true") -> RunExistsError:
    shown = ", ".join(str(path) for path in existing)
    return RunExistsError(f"{why}: a run is already there ({shown}); pass {resume} to continue it or "
                          f"--train.overwrite true to start over (deleting it), or choose another output folder")


def prepare_run_folder(engine: "Engine", tensorboard_dir: Path) -> None:
    """Called by the engine before anything is loaded or written: remove stale temporary files, then refuse
    to overwrite an existing run, or delete it for ``train.overwrite``; ``tensorboard_dir`` holds the run's
    event files."""
    cfg, acc = engine.cfg, engine.accelerator
    if acc.is_main_process:
        remove_stale_temp_files(engine.checkpoint_dir, engine.output_dir)
    existing = run_files(engine)
    if cfg.resume:
        source = resume_path(cfg, engine.output_dir, engine.checkpoint_path("latest"))
        own = is_own_checkpoint(engine, source)
        if own and cfg.overwrite:
            raise ConfigError(f"train.resume continues the run in {engine.checkpoint_dir} and train.overwrite "
                              f"would delete it; pass only one of them")
        if own or not existing or not source.is_file():  # a missing checkpoint: open_resume has said so
            return
        if not cfg.overwrite:
            raise _refusal(engine, existing, f"not resuming {source} into another run",
                           "--train.resume true without train.resume_checkpoint")
    elif not existing:
        return
    elif not cfg.overwrite:
        raise _refusal(engine, existing, "not starting a new run")
    acc.wait_for_everyone()  # every process has seen the old run before the main one deletes it
    if acc.is_main_process:
        events = sorted(Path(tensorboard_dir).glob("events.out.tfevents*")) if Path(tensorboard_dir).is_dir() else []
        for path in [*existing, *events]:
            path.unlink(missing_ok=True)
        outputs = [engine.output_dir / name for name in ("results", "export") if (engine.output_dir / name).is_dir()]
        for folder in outputs:  # its evaluation and export must not pass for the new run's
            shutil.rmtree(folder)
        (engine.output_dir / SPLIT_FILE).unlink(missing_ok=True)  # the new run records its own
        print(f"train.overwrite: deleted the previous run's {', '.join(str(p) for p in existing + outputs)} and "
              f"{len(events)} TensorBoard event file(s)", flush=True)
    acc.wait_for_everyone()
