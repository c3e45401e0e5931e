"""Resume state: RNG capture and restore, the checkpoint dicts the engine writes, and loading a
``checkpoint_latest`` back into an :class:`~shared.engine.Engine` so a killed run continues exactly."""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from .checkpoint import CheckpointError, load_checkpoint, load_model_weights
from .config import config_to_dict
from .io import atomic_write
from .optim import resume_scheduler
from .preflight import SPLIT_FILE, check_saved_split, split_digest, split_parts

if TYPE_CHECKING:
    from .engine import Engine
    from .train_config import TrainConfig


def plain(value: Any) -> Any:
    """Numbers as Python floats/ints so checkpoints load with weights_only=True and JSON accepts them."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def rng_state() -> dict:
    """The Python, NumPy, torch and CUDA generator states, in types ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_path(cfg: "TrainConfig", output_dir: Path, latest: Path) -> Path:
    """``resume_checkpoint`` as given, else relative to ``output_dir`` (the source recipes write
    ``checkpoints/checkpoint_latest.pth``), else the run's own latest checkpoint ``latest``."""
    if not cfg.resume_checkpoint:
        return latest
    path = Path(cfg.resume_checkpoint)
    if not path.is_absolute() and not path.exists() and (output_dir / path).exists():
        return output_dir / path
    return path


def is_own_checkpoint(engine: "Engine", path: Path) -> bool:
    """Whether ``path`` lies in ``engine``'s checkpoint folder (the run it continues is this folder's)."""
    return Path(path).resolve().parent == engine.checkpoint_dir.resolve()


def checkpoint_state(engine: "Engine", kind: str, epoch: int, metrics: Mapping[str, Any]) -> dict:
    """What ``checkpoint_<kind>`` holds: the weights (EMA weights for ``best_ema``) and the run's metadata;
    ``latest`` (and ``best`` with ``full_best_checkpoint``) also the full resume state."""
    config = config_to_dict(engine.run_config) if engine.run_config is not None else None
    meta = {"epoch": epoch, "global_step": engine.global_step, "metrics": plain(dict(metrics)),
            "config": config, **engine.checkpoint_extra}
    model = engine.accelerator.unwrap_model(engine.model)
    if kind == "best_ema":
        return {"model": engine.ema.module.state_dict(), **meta}
    if kind == "best" and not engine.cfg.full_best_checkpoint:
        return {"model": model.state_dict(), **meta}
    scaler = engine.accelerator.scaler
    return {
        "model": model.state_dict(),
        "ema": engine.ema.module.state_dict() if engine.ema else None,
        "optimizer": engine.optimizer.state_dict(),
        "scheduler": engine.scheduler.state_dict() if engine.scheduler else None,
        "scaler": scaler.state_dict() if scaler else None,
        "best_metric": engine.best_metric, "best_ema_metric": engine.best_ema_metric,
        "early_stopping": engine.early_stopping.state_dict(), "history": plain(engine.history),
        "rng": rng_state(), **meta,
    }


def open_resume(engine: "Engine", splits: Mapping[str, Any]) -> tuple[Path, dict]:
    """The checkpoint to resume and its state, checked before the run folder is touched (nothing deleted or
    written for a resume that is refused): a full checkpoint, of this run's classes in this order and of
    this run's split (``splits``: part -> dataset, see :mod:`shared.preflight`)."""
    path = resume_path(engine.cfg, engine.output_dir, engine.checkpoint_path("latest"))
    state = load_checkpoint(path)
    if "optimizer" not in state:
        raise CheckpointError(f"{path} holds weights only (a best/export checkpoint); "
                              f"resume from {engine.checkpoint_names['latest']}")
    saved_classes, classes = state.get("class_names"), engine.checkpoint_extra.get("class_names")
    if saved_classes is not None and classes is not None and list(saved_classes) != list(classes):
        raise CheckpointError(f"{path} was trained on classes {list(saved_classes)}, but this run has {list(classes)}; "
                              f"resume with that run's classes in that order, or start a new run without train.resume")
    parts = split_parts(splits)
    own_split = engine.output_dir / SPLIT_FILE
    if parts and own_split.is_file() and is_own_checkpoint(engine, path):
        check_saved_split(own_split, parts)  # this run's own split file: names the files that differ
    saved_split, split = state.get("split_digest"), split_digest(parts) if parts else None
    if saved_split is not None and split is not None and saved_split != split:
        raise CheckpointError(f"{path} was trained on another split of the data (other files in train/val/test); "
                              f"resume with that run's data and split settings, or start a new run")
    return path, state


def load_resume_state(engine: "Engine", path: Path, state: Mapping[str, Any]) -> None:
    """Load ``state`` (from :func:`open_resume`) into ``engine``; a clear :class:`CheckpointError` for another
    model/optimizer. A checkpoint of another folder brings its best checkpoints along, so that this run's
    ``load_best`` finds the best weights its restored best metric refers to."""
    if not is_own_checkpoint(engine, path) and engine.accelerator.is_main_process:
        for kind in ("best", "best_ema"):
            source = path.parent / engine.checkpoint_names[kind]
            if source.is_file():
                atomic_write(engine.checkpoint_path(kind), lambda tmp, source=source: shutil.copyfile(source, tmp))
    load_model_weights(engine.accelerator.unwrap_model(engine.model), state["model"], source=str(path))
    if engine.ema is not None and state.get("ema") is not None:
        load_model_weights(engine.ema.module, state["ema"], source=f"{path} (EMA)")
    try:
        engine.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: optimizer state does not fit this model/optimizer: {err}") from err
    resume_scheduler(engine.scheduler, state.get("scheduler"), int(state["global_step"]))  # rule: optim.py
    if engine.accelerator.scaler is not None and state.get("scaler"):
        engine.accelerator.scaler.load_state_dict(state["scaler"])
    engine.start_epoch = engine.epoch = int(state["epoch"])
    engine.global_step = int(state["global_step"])
    engine.best_metric, engine.best_ema_metric = state["best_metric"], state["best_ema_metric"]
    engine.early_stopping.load_state_dict(state["early_stopping"])
    engine.history = list(state["history"])
    engine.partial_epoch = state.get("partial_epoch")  # mid-epoch save: the epoch's progress (shared/preemption.py)
    set_rng_state(state["rng"])
    engine.accelerator.print(f"resumed from {path}: epoch {engine.start_epoch}, step {engine.global_step}")
