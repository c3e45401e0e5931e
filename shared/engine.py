"""The Accelerate training loop that every project uses.

A project supplies a model, datasets and a :class:`Task` (how a batch becomes a loss, and how
predictions become metrics); the :class:`Engine` owns everything else: DDP and mixed precision through
Accelerate, gradient accumulation and clipping, a per-step warmup + cosine (or step/plateau) schedule
from timm, model EMA (timm ``ModelEmaV3``), evaluation of the raw and EMA weights with
``gather_for_metrics``, early stopping, TensorBoard logging with a global step that continues across
resumes, atomic checkpoints with full resume state, and a guard that stops on a non-finite loss.

``TrainConfig.batch_size`` is the GLOBAL batch: each of ``N`` processes loads
``batch_size / (N * grad_accum_steps)`` samples per step, so a recipe means the same on 1 or 8 GPUs.
"""
from __future__ import annotations

import gc
import math
import random
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import ProjectConfiguration, set_seed
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, load_checkpoint, load_model_weights, save_checkpoint
from .config import config_to_dict, save_config
from .data import single_threaded_worker
from .io import write_json


@dataclass
class EarlyStoppingConfig:
    monitor: str = "val/loss"  # any logged key, e.g. "val/macro_auroc" or "val_ema/accuracy"
    mode: str = "min"  # "max" when larger is better
    patience: int = 0  # epochs without improvement before stopping; 0 = never stop early
    min_delta: float = 0.0  # an improvement must exceed this to reset the patience counter


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    epochs: int = 10
    batch_size: int = 32  # global batch, split over processes and accumulation steps
    eval_batch_size: int = 0  # 0 = batch_size
    num_workers: int = 4
    optimizer: str = "adamw"  # any timm optimizer name: adamw, adam, sgd, lamb, ...
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05  # never applied to norms, biases or model.no_weight_decay() params
    momentum: float = 0.9  # sgd only
    scheduler: str = "cosine"  # cosine | step | plateau | none (stepped every optimizer update)
    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.01  # warmup starts at lr * this, never at 0
    decay_epochs: float = 30.0  # step scheduler interval; plateau patience
    decay_rate: float = 0.1
    grad_accum_steps: int = 1
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    mixed_precision: str = "bf16"  # bf16 | fp16 | no
    cpu: bool = False  # True: train on the CPU even when a GPU is visible
    ema: bool = True
    ema_decay: float = 0.9998
    ema_warmup: bool = False  # timm's decay warmup for short runs
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    seed: int = 42
    resume: bool = False
    resume_checkpoint: str = ""  # default: <output_dir>/checkpoints/checkpoint_latest.pth
    save_every: int = 1  # epochs between checkpoint_latest writes (the last epoch is always saved)
    save_best: bool = True  # False: still track the best metric, but write no checkpoint_best*.pth
    channels_last: str = "auto"  # auto (= on CUDA) | true | false
    compile: bool = False  # torch.compile through Accelerate's dynamo plugin
    log_every: int = 20  # optimizer steps between train-loss logs and non-finite checks
    limit_train_batches: int = 0  # > 0: stop each epoch after this many batches (smoke tests)
    progress_bar: bool = True
    find_unused_parameters: bool = False  # DDP option for models with conditionally used branches
    tracker: str = "tensorboard"  # tensorboard | none
    log_scalars: bool = True  # False: the engine logs no scalars itself (callbacks log via engine.tensorboard)
    full_best_checkpoint: bool = False  # True: checkpoint_best also holds the resume state, like checkpoint_latest


def _use_cpu(force_cpu: bool) -> bool:
    return force_cpu or not torch.cuda.is_available()


def fused_optimizer_kwargs(opt_name: str, device: torch.device) -> dict:
    """``fused=True`` for Adam/AdamW on CUDA and CPU: one kernel updates every parameter. On CPU, PyTorch
    otherwise loops over the tensors in Python; for 11.5M parameters the step takes 7.5 ms instead of 34 ms."""
    if device.type in ("cuda", "cpu") and opt_name.lower() in ("adam", "adamw"):
        return {"fused": True}
    return {}


def process_state(force_cpu: bool = False) -> PartialState:
    """The distributed state. On a machine without CUDA, ask for CPU explicitly: Accelerate only then
    turns a multi-process launch (torchrun / accelerate launch) into gloo DDP instead of N lone runs."""
    return PartialState(cpu=_use_cpu(force_cpu))


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class Task:
    """What a project tells the engine. Subclass and override the three methods."""

    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor | dict[str, Any]:
        """Return the loss, or a dict with ``"loss"`` and anything callbacks want to see."""
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Return per-sample tensors (first dim = batch); they are gathered over processes."""
        raise NotImplementedError

    def compute_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Turn the whole gathered evaluation set into ``{name: value}``."""
        raise NotImplementedError

    def on_eval_start(self, model: nn.Module) -> None:
        """Hook to precompute something once per evaluation (e.g. class text embeddings)."""

    #: ``multi-label`` (sigmoid per class), ``multi-class`` or ``zero-shot`` (softmax over classes).
    task_type: str = "multi-class"

    #: The classes in output order. The engine writes them into every checkpoint under ``class_names``
    #: and refuses to resume a checkpoint whose classes or class order differ.
    class_names: Sequence[str] | None = None


class Callback:
    """Hooks into the loop; all optional. ``engine`` exposes accelerator, model, ema, global_step."""

    def on_fit_start(self, engine: "Engine") -> None: ...
    def on_epoch_start(self, engine: "Engine", epoch: int) -> None: ...
    def on_train_batch_end(self, engine: "Engine", batch: Any, outputs: dict[str, Any]) -> None: ...
    def on_epoch_end(self, engine: "Engine", epoch: int, metrics: dict[str, Any]) -> None: ...


class EarlyStopping:
    """Stop after ``patience`` epochs in which the metric did not improve by more than ``min_delta``."""

    def __init__(self, mode: str = "max", patience: int = 0, min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError(f"early stopping mode must be 'max' or 'min', got {mode!r}")
        self.mode, self.patience, self.min_delta = mode, patience, min_delta
        self.best: float | None = None
        self.num_bad_epochs = 0

    def is_better(self, value: float, reference: float | None, min_delta: float = 0.0) -> bool:
        if value is None or math.isnan(value):
            return False
        if reference is None:
            return True
        return value > reference + min_delta if self.mode == "max" else value < reference - min_delta

    def step(self, value: float) -> bool:
        """Record one epoch's metric; True when it counts as an improvement."""
        if self.is_better(value, self.best, self.min_delta):
            self.best, self.num_bad_epochs = float(value), 0
            return True
        self.num_bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.num_bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs}

    def load_state_dict(self, state: Mapping) -> None:
        self.best, self.num_bad_epochs = state["best"], int(state["num_bad_epochs"])


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: Mapping) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    """Numbers as Python floats/ints so checkpoints load with weights_only=True and JSON accepts them."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Engine:
    """Train ``model`` on ``train_dataset`` with ``task``; see the module docstring."""

    CHECKPOINT_NAMES = {"latest": "checkpoint_latest.pth", "best": "checkpoint_best.pth",
                        "best_ema": "checkpoint_best_ema.pth"}

    def __init__(self, cfg: TrainConfig, model: nn.Module, task: Task, train_dataset: Dataset,
                 val_dataset: Dataset | None = None, *, output_dir: str | Path | None = None,
                 callbacks: Sequence[Callback] = (), run_config: Any = None,
                 checkpoint_extra: Mapping[str, Any] | None = None,
                 sample_weights: Sequence[float] | None = None, collate_fn=None,
                 checkpoint_names: Mapping[str, str] | None = None, log_dir: str | Path | None = None,
                 project_name: str = "tensorboard", checkpoint_dir: str | Path | None = None):
        self.cfg, self.task, self.callbacks = cfg, task, list(callbacks)
        self.output_dir = Path(output_dir or cfg.output_dir)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else self.output_dir / "checkpoints"
        self.checkpoint_names = {**self.CHECKPOINT_NAMES, **(checkpoint_names or {})}
        self.checkpoint_extra = _plain(dict(checkpoint_extra or {}))
        if task.class_names is not None:
            self.checkpoint_extra["class_names"] = list(task.class_names)
        self.run_config = run_config
        self.accelerator = self._make_accelerator(log_dir or self.output_dir / "logs")
        set_seed(cfg.seed)
        acc = self.accelerator

        self.channels_last = {"auto": acc.device.type == "cuda", "true": True, "false": False}[
            str(cfg.channels_last).lower()]
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.train_loader = self._make_loader(train_dataset, train=True, collate_fn=collate_fn,
                                              sample_weights=sample_weights)
        self.val_loader = (self._make_loader(val_dataset, train=False, collate_fn=collate_fn)
                           if val_dataset is not None else None)
        self.collate_fn = collate_fn
        optimizer = create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                        momentum=cfg.momentum, **fused_optimizer_kwargs(cfg.optimizer, acc.device))
        self.model, self.optimizer, self.train_loader = acc.prepare(model, optimizer, self.train_loader)
        if self.val_loader is not None:
            self.val_loader = acc.prepare(self.val_loader)

        batches = len(self.train_loader)
        if cfg.limit_train_batches > 0:
            batches = min(batches, max(cfg.grad_accum_steps,
                                       cfg.limit_train_batches // cfg.grad_accum_steps * cfg.grad_accum_steps))
        self.batches_per_epoch = batches
        self.updates_per_epoch = max(1, math.ceil(batches / cfg.grad_accum_steps))
        self.scheduler = self._make_scheduler()
        self.ema = (ModelEmaV3(acc.unwrap_model(self.model), decay=cfg.ema_decay, use_warmup=cfg.ema_warmup)
                    if cfg.ema else None)

        es = cfg.early_stopping
        self.early_stopping = EarlyStopping(es.mode, es.patience, es.min_delta)
        self.best_metric: float | None = None
        self.best_ema_metric: float | None = None
        self.start_epoch = 0
        self.global_step = 0
        self.epoch = 0
        self.history: list[dict] = []
        if cfg.resume:
            self._resume(self._resume_path())

        # A resumed run drops TensorBoard events written after its checkpoint (a killed run's partial
        # epoch) but keeps the checkpointed epoch's own metrics, logged at its last step.
        tracker_kwargs = {"tensorboard": {"purge_step": self.global_step + 1}} if self.global_step else {}
        if cfg.tracker != "none":
            acc.init_trackers(project_name, init_kwargs=tracker_kwargs)
        if acc.is_main_process and run_config is not None:
            save_config(run_config, self.output_dir / "config.yaml")

    # ----------------------------------------------------------------------------------- set-up
    def _make_accelerator(self, log_dir: Path) -> Accelerator:
        cfg = self.cfg
        # Several engines may run in one process (k-fold CV, tests); forget the previous one's
        # precision/accumulation settings but keep the distributed process group.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        precision = cfg.mixed_precision
        if precision == "fp16" and not torch.cuda.is_available():
            warnings.warn("fp16 needs a CUDA GPU; using bf16 autocast on this CPU instead", RuntimeWarning)
            precision = "bf16"
        process_state(cfg.cpu)
        return Accelerator(
            cpu=_use_cpu(cfg.cpu),
            mixed_precision=precision,
            gradient_accumulation_steps=cfg.grad_accum_steps,
            log_with=None if cfg.tracker == "none" else cfg.tracker,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir), logging_dir=str(log_dir)),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.find_unused_parameters)],
            dynamo_backend="inductor" if cfg.compile else "no",
            step_scheduler_with_optimizer=False,
        )

    def per_device_batch(self, global_batch: int, accumulate: bool) -> int:
        divisor = self.accelerator.num_processes * (self.cfg.grad_accum_steps if accumulate else 1)
        if global_batch % divisor:
            warnings.warn(f"global batch {global_batch} is not divisible by {divisor} "
                          f"(processes x accumulation); using {max(1, global_batch // divisor)} per device")
        return max(1, global_batch // divisor)

    def _make_loader(self, dataset: Dataset, train: bool, collate_fn=None,
                     sample_weights: Sequence[float] | None = None) -> DataLoader:
        cfg = self.cfg
        if train:
            batch = self.per_device_batch(cfg.batch_size, accumulate=True)
        else:
            batch = self.per_device_batch(cfg.eval_batch_size or cfg.batch_size, accumulate=False)
        generator = torch.Generator().manual_seed(cfg.seed)
        sampler = None
        if train and sample_weights is not None:
            sampler = WeightedRandomSampler(torch.as_tensor(sample_weights, dtype=torch.double),
                                            num_samples=len(dataset), replacement=True, generator=generator)
        return DataLoader(
            dataset, batch_size=batch, shuffle=train and sampler is None, sampler=sampler,
            generator=generator if train else None, num_workers=cfg.num_workers, collate_fn=collate_fn,
            pin_memory=self.accelerator.device.type == "cuda", persistent_workers=cfg.num_workers > 0,
            worker_init_fn=single_threaded_worker,
            drop_last=train and len(dataset) >= batch * self.accelerator.num_processes * 2,
        )

    def _make_scheduler(self):
        cfg = self.cfg
        if cfg.scheduler == "none":
            return None
        # Warmup is a prefix and the decay spans the remaining epochs, so the peak lr is reached
        # exactly when warmup ends and min_lr exactly at the last step.
        scheduler, _ = create_scheduler_v2(
            self.optimizer, sched=cfg.scheduler, num_epochs=max(cfg.epochs - cfg.warmup_epochs, 1e-3),
            warmup_prefix=True, decay_epochs=cfg.decay_epochs,
            patience_epochs=int(cfg.decay_epochs), decay_rate=cfg.decay_rate, min_lr=cfg.min_lr,
            warmup_lr=cfg.lr * cfg.warmup_start_factor,
            warmup_epochs=cfg.warmup_epochs, plateau_mode=cfg.early_stopping.mode,
            step_on_epochs=cfg.scheduler == "plateau", updates_per_epoch=self.updates_per_epoch,
        )
        return scheduler

    # ------------------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, kind: str) -> Path:
        return self.checkpoint_dir / self.checkpoint_names[kind]

    def _meta(self, epoch: int, metrics: Mapping[str, Any]) -> dict:
        config = config_to_dict(self.run_config) if self.run_config is not None else None
        return {"epoch": epoch, "global_step": self.global_step, "metrics": _plain(dict(metrics)),
                "config": config, **self.checkpoint_extra}

    def _save(self, kind: str, epoch: int, metrics: Mapping[str, Any]) -> None:
        if not self.accelerator.is_main_process or (kind != "latest" and not self.cfg.save_best):
            return
        model = self.accelerator.unwrap_model(self.model)
        if kind == "best_ema":
            state = {"model": self.ema.module.state_dict(), **self._meta(epoch, metrics)}
        elif kind == "best" and not self.cfg.full_best_checkpoint:
            state = {"model": model.state_dict(), **self._meta(epoch, metrics)}
        else:
            state = {
                "model": model.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "scaler": self.accelerator.scaler.state_dict() if self.accelerator.scaler else None,
                "best_metric": self.best_metric, "best_ema_metric": self.best_ema_metric,
                "early_stopping": self.early_stopping.state_dict(), "history": _plain(self.history),
                "rng": _rng_state(), **self._meta(epoch, metrics),
            }
        save_checkpoint(state, self.checkpoint_path(kind))

    def _resume_path(self) -> Path:
        """``resume_checkpoint`` as given, else relative to ``output_dir`` (the source recipes write
        ``checkpoints/checkpoint_latest.pth``), else the run's own latest checkpoint."""
        if not self.cfg.resume_checkpoint:
            return self.checkpoint_path("latest")
        path = Path(self.cfg.resume_checkpoint)
        if not path.is_absolute() and not path.exists() and (self.output_dir / path).exists():
            return self.output_dir / path
        return path

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path)
        if "optimizer" not in state:
            raise CheckpointError(f"{path} holds weights only (a best/export checkpoint); "
                                  f"resume from {self.checkpoint_names['latest']}")
        saved_classes, classes = state.get("class_names"), self.checkpoint_extra.get("class_names")
        if saved_classes is not None and classes is not None and list(saved_classes) != list(classes):
            raise CheckpointError(f"{path} was trained on classes {list(saved_classes)}, but this run has {list(classes)}")
        load_model_weights(self.accelerator.unwrap_model(self.model), state["model"], source=str(path))
        if self.ema is not None and state.get("ema") is not None:
            load_model_weights(self.ema.module, state["ema"], source=f"{path} (EMA)")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: optimizer state does not fit this model/optimizer: {err}") from err
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.start_epoch = self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_metric, self.best_ema_metric = state["best_metric"], state["best_ema_metric"]
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.history = list(state["history"])
        _set_rng_state(state["rng"])
        self.accelerator.print(f"resumed from {path}: epoch {self.start_epoch}, step {self.global_step}")

    # -------------------------------------------------------------------------------- training
    @property
    def tensorboard(self):
        """The SummaryWriter (main process, tensorboard tracker), for histograms and images."""
        if self.cfg.tracker != "tensorboard" or not self.accelerator.is_main_process:
            return None
        return self.accelerator.get_tracker("tensorboard", unwrap=True)

    def log(self, values: Mapping[str, Any], step: int | None = None) -> None:
        if self.cfg.tracker != "none" and self.cfg.log_scalars:
            self.accelerator.log(_scalars(values), step=self.global_step if step is None else step)

    def _prepare_batch(self, batch: Any) -> Any:
        """Move image tensors to channels_last when that layout is on (a no-op otherwise)."""
        if not self.channels_last:
            return batch
        if isinstance(batch, torch.Tensor):
            if batch.is_floating_point() and batch.ndim == 4:
                return batch.contiguous(memory_format=torch.channels_last)
            if batch.is_floating_point() and batch.ndim == 5:
                return batch.contiguous(memory_format=torch.channels_last_3d)
            return batch
        if isinstance(batch, Mapping):
            return type(batch)({k: self._prepare_batch(v) for k, v in batch.items()})
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._prepare_batch(v) for v in batch)
        return batch

    def _check_finite(self, nonfinite: torch.Tensor, since_step: int) -> None:
        if self.accelerator.reduce(nonfinite, reduction="sum").item() > 0:
            latest = self.checkpoint_path("latest")
            kept = f"the last good checkpoint is kept at {latest}" if latest.exists() else "no checkpoint was written yet"
            self.close()
            raise NonFiniteLossError(
                f"training loss became NaN/Inf in epoch {self.epoch + 1} between optimizer steps "
                f"{since_step} and {self.global_step}; training stopped and {kept}. Lower the learning "
                f"rate, keep grad_clip on, check the inputs for NaN, or prefer bf16 over fp16.")

    def train_one_epoch(self) -> dict[str, float]:
        acc, cfg, model = self.accelerator, self.cfg, self.model
        model.train()
        loss_sum = torch.zeros((), device=acc.device)
        scalar_sums: dict[str, torch.Tensor] = {}  # other 0-d outputs of training_step, e.g. accuracy
        window_sum = torch.zeros((), device=acc.device)
        nonfinite = torch.zeros((), device=acc.device)
        batches, window_batches, window_start = 0, 0, self.global_step
        grad_norm = None
        bar = tqdm(total=self.batches_per_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not (acc.is_local_main_process and cfg.progress_bar), leave=False)
        for batch in self.train_loader:
            if batches >= self.batches_per_epoch:
                break
            batch = self._prepare_batch(batch)
            with acc.accumulate(model):
                outputs = self.task.training_step(model, batch)
                outputs = outputs if isinstance(outputs, dict) else {"loss": outputs}
                loss = outputs["loss"]
                acc.backward(loss)
                if acc.sync_gradients:
                    grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            detached = loss.detach().float()
            nonfinite += ~torch.isfinite(detached)
            finite_loss = torch.nan_to_num(detached, nan=0.0, posinf=0.0, neginf=0.0)
            loss_sum += finite_loss
            window_sum += finite_loss
            for key, value in outputs.items():
                if key != "loss" and isinstance(value, torch.Tensor) and value.ndim == 0:
                    scalar_sums[key] = scalar_sums.get(key, 0.0) + value.detach().float()
            batches += 1
            window_batches += 1
            bar.update(1)
            if acc.sync_gradients:
                self.global_step += 1
                if self.ema is not None:
                    self.ema.update(acc.unwrap_model(model), step=self.global_step)
                if self.scheduler is not None:
                    self.scheduler.step_update(num_updates=self.global_step)
                if self.global_step % cfg.log_every == 0:
                    self._check_finite(nonfinite, window_start)
                    # step-level tags differ from the epoch-level train/* ones, so no tag repeats a step
                    values = {"train_step/loss": acc.reduce(window_sum, "mean").item() / window_batches,
                              "train_step/lr": self.optimizer.param_groups[0]["lr"]}
                    if grad_norm is not None:
                        values["train_step/grad_norm"] = float(grad_norm)
                    self.log(values)
                    bar.set_postfix(loss=f"{values['train_step/loss']:.4f}")
                    window_sum.zero_()
                    window_batches, window_start = 0, self.global_step
            for callback in self.callbacks:  # global_step already counts this batch's optimizer step
                callback.on_train_batch_end(self, batch, outputs)
        bar.close()
        self._check_finite(nonfinite, window_start)
        means = {f"train/{key}": acc.reduce(total, "mean").item() / max(batches, 1) for key, total in scalar_sums.items()}
        return {"train/loss": acc.reduce(loss_sum, "mean").item() / max(batches, 1), **means,
                "train/lr": self.optimizer.param_groups[0]["lr"]}

    @torch.no_grad()
    def predict(self, loader: Iterable, model: nn.Module | None = None) -> dict[str, np.ndarray]:
        """Run ``task.eval_step`` over ``loader``; gathered, concatenated numpy outputs."""
        model = self.model if model is None else model
        was_training = model.training
        model.eval()
        self.task.on_eval_start(model)
        collected: dict[str, list[torch.Tensor]] = defaultdict(list)
        for batch in loader:
            with self.accelerator.autocast():
                outputs = self.task.eval_step(model, self._prepare_batch(batch))
            for key, value in self.accelerator.gather_for_metrics(outputs).items():
                collected[key].append(value.float().cpu() if value.is_floating_point() else value.cpu())
        model.train(was_training)
        return {k: torch.cat(v).numpy() for k, v in collected.items()}

    def evaluate(self, data: Dataset | DataLoader, use_ema: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metrics and raw outputs of the raw (or EMA) model on a dataset or prepared loader."""
        loader = data
        if isinstance(data, Dataset):
            loader = self.accelerator.prepare(self._make_loader(data, train=False, collate_fn=self.collate_fn))
        model = self.ema.module if use_ema and self.ema is not None else self.model
        outputs = self.predict(loader, model)
        return _plain(self.task.compute_metrics(outputs)), outputs

    def _monitor_value(self, metrics: Mapping[str, Any], key: str) -> float:
        if key not in metrics:
            raise KeyError(f"early_stopping.monitor={key!r} is not among the logged metrics "
                           f"{sorted(k for k in metrics if isinstance(metrics[k], (int, float)))}")
        return float(metrics[key])

    def fit(self) -> list[dict]:
        """Train from ``start_epoch`` to ``cfg.epochs`` (or an early stop); returns the history."""
        cfg, acc = self.cfg, self.accelerator
        monitor = cfg.early_stopping.monitor
        ema_monitor = monitor.replace("val/", "val_ema/", 1)
        for callback in self.callbacks:
            callback.on_fit_start(self)
        if self.early_stopping.should_stop:
            acc.print("early stopping had already triggered in the resumed run; nothing to do")
            return self.history
        if cfg.num_workers > 0:
            # Loader workers fork from this process. Moving every object alive now out of the garbage
            # collector's reach keeps the workers' collections from writing to, and so copying, the
            # parent's memory pages (the gc.freeze recipe); measured in bench/data_pipeline.py.
            gc.freeze()
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                self.epoch = epoch
                if hasattr(self.train_loader, "set_epoch"):
                    self.train_loader.set_epoch(epoch)
                for callback in self.callbacks:
                    callback.on_epoch_start(self, epoch)
                metrics: dict[str, Any] = {"epoch": epoch + 1, **self.train_one_epoch()}
                if self.val_loader is not None:
                    val, _ = self.evaluate(self.val_loader)
                    metrics.update({f"val/{k}": v for k, v in val.items()})
                    if self.ema is not None:
                        val_ema, _ = self.evaluate(self.val_loader, use_ema=True)
                        metrics.update({f"val_ema/{k}": v for k, v in val_ema.items()})
                    value = self._monitor_value(metrics, monitor)
                    if self.scheduler is not None:
                        self.scheduler.step(epoch + 1, metric=value)
                    self.early_stopping.step(value)
                    if self.early_stopping.is_better(value, self.best_metric):
                        self.best_metric = value
                        self._save("best", epoch + 1, metrics)
                    if self.ema is not None and ema_monitor in metrics:
                        ema_value = float(metrics[ema_monitor])
                        if self.early_stopping.is_better(ema_value, self.best_ema_metric):
                            self.best_ema_metric = ema_value
                            self._save("best_ema", epoch + 1, metrics)
                else:
                    if self.scheduler is not None:
                        self.scheduler.step(epoch + 1)
                    self._save("best", epoch + 1, metrics)
                    if self.ema is not None:
                        self._save("best_ema", epoch + 1, metrics)
                self.history.append(_plain(metrics))
                last = epoch + 1 == cfg.epochs or self.early_stopping.should_stop
                if (epoch + 1) % cfg.save_every == 0 or last:
                    self._save("latest", epoch + 1, metrics)
                self.log(metrics)
                self._write_history()
                acc.print(self._summary(metrics, monitor))
                for callback in self.callbacks:
                    callback.on_epoch_end(self, epoch, metrics)
                acc.wait_for_everyone()
                if self.early_stopping.should_stop:
                    acc.print(f"early stopping: {monitor} did not improve by more than "
                              f"{cfg.early_stopping.min_delta} for {cfg.early_stopping.patience} epochs")
                    break
        except BaseException:
            self.close()
            raise
        finally:
            gc.unfreeze()  # frozen objects would otherwise outlive the run (and miss the clean-up at exit)
        return self.history

    def _write_history(self) -> None:
        if self.accelerator.is_main_process:
            path = self.output_dir / "history.json"
            write_json(path, self.history, indent=1)

    @staticmethod
    def _summary(metrics: Mapping[str, Any], monitor: str) -> str:
        shown = ["train/loss", "val/loss", monitor, monitor.replace("val/", "val_ema/", 1)]
        parts = [f"{k}={metrics[k]:.4f}" for k in dict.fromkeys(shown) if isinstance(metrics.get(k), float)]
        return f"epoch {metrics['epoch']}: " + " ".join(parts)

    def load_best(self, use_ema: bool = True) -> nn.Module:
        """Load ``checkpoint_best_ema`` (or ``checkpoint_best``) into a model and return it."""
        kind = "best_ema" if use_ema and self.ema is not None else "best"
        self.accelerator.wait_for_everyone()
        state = load_checkpoint(self.checkpoint_path(kind))
        target = self.ema.module if kind == "best_ema" else self.accelerator.unwrap_model(self.model)
        load_model_weights(target, state["model"], source=str(self.checkpoint_path(kind)))
        return target

    def close(self) -> None:
        """Flush and close the trackers (call once training and final evaluation are done)."""
        if self.cfg.tracker != "none":
            self.accelerator.end_training()
