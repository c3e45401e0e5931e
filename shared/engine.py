"""The Accelerate training loop that every project uses.

A project supplies a model, datasets and a :class:`Task` (how a batch becomes a loss, and how
predictions become metrics); the :class:`Engine` owns everything else: DDP and mixed precision through
Accelerate, gradient accumulation and clipping, a per-step warmup + cosine (or step/plateau) schedule
from timm, model EMA (timm ``ModelEmaV3``), evaluation of the raw and EMA weights with
``gather_for_metrics``, early stopping, TensorBoard logging with a global step that continues across
resumes, atomic checkpoints with full resume state, and a guard that stops on a non-finite loss. Every split
is checked before the first step (``preflight``); a folder that holds a run is never overwritten
(``run_folder``); SIGTERM/SIGINT save a mid-epoch checkpoint and exit (``preemption``).

``TrainConfig.batch_size`` is the GLOBAL batch: each of ``N`` processes loads
``batch_size / (N * grad_accum_steps)`` samples per step, so a recipe means the same on 1 or 8 GPUs.

Its parts live in small modules, re-exported here: ``train_config``, ``interfaces`` (Task, Callback),
``early_stopping``, ``accelerator`` (device, the precision rule), ``optim``, ``loaders``, ``resume``,
``run_folder``, ``preflight`` and ``preemption``.
"""
from __future__ import annotations

import gc
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from accelerate.utils import set_seed
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .accelerator import make_accelerator, process_state, resolve_mixed_precision
from .checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from .config import save_config
from .early_stopping import EarlyStopping, check_monitor, monitor_value
from .interfaces import Callback, Task
from .io import write_json
from .loaders import channels_last_batch, make_loader, per_device_batch
from .optim import create_optimizer, create_scheduler, fused_optimizer_kwargs
from .preemption import EpochProgress, Preemption
from .preflight import preflight
from .resume import checkpoint_state, load_resume_state, open_resume, plain
from .run_folder import prepare_run_folder
from .train_config import MIXED_PRECISION_CHOICES, EarlyStoppingConfig, TrainConfig

__all__ = ["Callback", "EarlyStopping", "EarlyStoppingConfig", "Engine", "MIXED_PRECISION_CHOICES",
           "NonFiniteLossError", "Task", "TrainConfig", "fused_optimizer_kwargs", "process_state",
           "resolve_mixed_precision"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


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
                 project_name: str = "tensorboard", checkpoint_dir: str | Path | None = None,
                 held_out: Mapping[str, Dataset] | None = None):
        self.cfg, self.task, self.callbacks = cfg, task, list(callbacks)
        self.output_dir = Path(output_dir or cfg.output_dir)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else self.output_dir / "checkpoints"
        self.checkpoint_names = {**self.CHECKPOINT_NAMES, **(checkpoint_names or {})}
        self.checkpoint_extra = plain(dict(checkpoint_extra or {}))
        if task.class_names is not None:
            self.checkpoint_extra["class_names"] = list(task.class_names)
        self.run_config = run_config
        log_dir = Path(log_dir or self.output_dir / "logs")
        self.accelerator = make_accelerator(cfg, self.output_dir, log_dir)
        splits = {"train": train_dataset, "val": val_dataset, **(held_out or {})}
        resumed = open_resume(self, splits) if cfg.resume else None  # refused before anything is deleted or written
        prepare_run_folder(self, log_dir / project_name)  # refuses to overwrite a run; removes stale .tmp files
        preflight(self, splits)  # every file of every split opened, class counts, split.csv (shared/preflight.py)
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
        optimizer = create_optimizer(model, cfg, acc.device)
        self.model, self.optimizer, self.train_loader = acc.prepare(model, optimizer, self.train_loader)
        if self.val_loader is not None:
            self.val_loader = acc.prepare(self.val_loader)

        batches = len(self.train_loader)
        if cfg.limit_train_batches > 0:
            batches = min(batches, max(cfg.grad_accum_steps,
                                       cfg.limit_train_batches // cfg.grad_accum_steps * cfg.grad_accum_steps))
        self.batches_per_epoch = batches
        self.updates_per_epoch = max(1, math.ceil(batches / cfg.grad_accum_steps))
        self.scheduler = create_scheduler(self.optimizer, cfg, self.updates_per_epoch)
        self.ema = (ModelEmaV3(acc.unwrap_model(self.model), decay=cfg.ema_decay, use_warmup=cfg.ema_warmup)
                    if cfg.ema else None)

        es = cfg.early_stopping
        self.early_stopping = EarlyStopping(es.mode, es.patience, es.min_delta)
        self.best_metric: float | None = None
        self.best_ema_metric: float | None = None
        self.start_epoch, self.partial_epoch = 0, None  # partial_epoch: a mid-epoch checkpoint's progress
        self.preemption = Preemption()  # SIGTERM/SIGINT during fit: save, print the resume command, exit
        self.global_step = self.epoch = 0
        self.history: list[dict] = []
        if resumed:
            load_resume_state(self, *resumed)

        # A resumed run drops TensorBoard events written after its checkpoint (a killed run's partial
        # epoch) but keeps the checkpointed epoch's own metrics, logged at its last step.
        tracker_kwargs = {"tensorboard": {"purge_step": self.global_step + 1}} if self.global_step else {}
        if cfg.tracker != "none":
            acc.init_trackers(project_name, init_kwargs=tracker_kwargs)
        if acc.is_main_process and run_config is not None:
            save_config(run_config, self.output_dir / "config.yaml")

    # ----------------------------------------------------------------------------------- set-up
    def per_device_batch(self, global_batch: int, accumulate: bool) -> int:
        return per_device_batch(global_batch,
                                self.accelerator.num_processes * (self.cfg.grad_accum_steps if accumulate else 1))

    def _make_loader(self, dataset: Dataset, train: bool, collate_fn=None,
                     sample_weights: Sequence[float] | None = None) -> DataLoader:
        cfg = self.cfg
        batch = self.per_device_batch(cfg.batch_size if train else cfg.eval_batch_size or cfg.batch_size,
                                      accumulate=train)
        return make_loader(dataset, cfg, batch, self.accelerator, train=train, collate_fn=collate_fn,
                           sample_weights=sample_weights)

    # ------------------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, kind: str) -> Path:
        return self.checkpoint_dir / self.checkpoint_names[kind]

    def _save(self, kind: str, epoch: int, metrics: Mapping[str, Any]) -> None:
        if not self.accelerator.is_main_process or (kind != "latest" and not self.cfg.save_best):
            return
        save_checkpoint(checkpoint_state(self, kind, epoch, metrics), self.checkpoint_path(kind))

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
        return channels_last_batch(batch) if self.channels_last else batch

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
        p = EpochProgress.start(self)  # running loss sums; a resumed mid-epoch checkpoint's, if any
        grad_norm = None
        bar = tqdm(total=self.batches_per_epoch, initial=p.batches, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not (acc.is_local_main_process and cfg.progress_bar), leave=False)
        for batch in p.loader(self.train_loader):  # skips the batches a mid-epoch checkpoint already did
            if p.batches >= self.batches_per_epoch:
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
            p.add(loss, outputs)
            bar.update(1)
            if acc.sync_gradients:
                self.global_step += 1
                if self.ema is not None:
                    self.ema.update(acc.unwrap_model(model), step=self.global_step)
                if self.scheduler is not None:
                    self.scheduler.step_update(num_updates=self.global_step)
                if self.global_step % cfg.log_every == 0:
                    self._check_finite(p.nonfinite, p.window_start)
                    # step-level tags differ from the epoch-level train/* ones, so no tag repeats a step
                    values = {"train_step/loss": acc.reduce(p.window_sum, "mean").item() / p.window_batches,
                              "train_step/lr": self.optimizer.param_groups[0]["lr"]}
                    if grad_norm is not None:
                        values["train_step/grad_norm"] = float(grad_norm)
                    self.log(values)
                    bar.set_postfix(loss=f"{values['train_step/loss']:.4f}")
                    p.reset_window(self.global_step)
            for callback in self.callbacks:  # global_step already counts this batch's optimizer step
                callback.on_train_batch_end(self, batch, outputs)
            self.preemption.after_step(self, p)  # save_every_steps; on SIGTERM/SIGINT save and exit
        bar.close()
        self._check_finite(p.nonfinite, p.window_start)
        return p.means(acc, self.optimizer)

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
        return plain(self.task.compute_metrics(outputs)), outputs

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
        check_monitor(self)
        if cfg.num_workers > 0:
            # Loader workers fork from this process. Moving every object alive now out of the garbage
            # collector's reach keeps the workers' collections from writing to, and so copying, the
            # parent's memory pages (the gc.freeze recipe); measured in bench/data_pipeline.py.
            gc.freeze()
        self.preemption.install()
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
                    value = monitor_value(metrics, monitor)
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
                self.history.append(plain(metrics))
                last = epoch + 1 == cfg.epochs or self.early_stopping.should_stop
                saved = (epoch + 1) % cfg.save_every == 0 or last
                if saved:
                    self._save("latest", epoch + 1, metrics)
                self.log(metrics)
                self._write_history()
                acc.print(self._summary(metrics, monitor))
                for callback in self.callbacks:
                    callback.on_epoch_end(self, epoch, metrics)
                acc.wait_for_everyone()
                self.preemption.after_epoch(self, saved)  # a signal during validation: stop here
                if self.early_stopping.should_stop:
                    acc.print(f"early stopping: {monitor} did not improve by more than "
                              f"{cfg.early_stopping.min_delta} for {cfg.early_stopping.patience} epochs")
                    break
        except BaseException:
            self.close()
            raise
        finally:
            gc.unfreeze()  # frozen objects would otherwise outlive the run (and miss the clean-up at exit)
            self.preemption.restore()
        return self.history

    def _write_history(self) -> None:
        if self.accelerator.is_main_process:
            write_json(self.output_dir / "history.json", self.history, indent=1)

    @staticmethod
    def _summary(metrics: Mapping[str, Any], monitor: str) -> str:
        shown = ["train/loss", "val/loss", monitor, monitor.replace("val/", "val_ema/", 1)]
        parts = [f"{k}={metrics[k]:.4f}" for k in dict.fromkeys(shown) if isinstance(metrics.get(k), float)]
        return f"epoch {metrics['epoch']}: " + " ".join(parts)

    def load_best(self, use_ema: bool = True) -> nn.Module:
        """Load ``checkpoint_best_ema`` (or ``checkpoint_best``) into a model and return it; with
        ``save_best: false`` there is no best checkpoint and the final weights are returned as they are."""
        kind = "best_ema" if use_ema and self.ema is not None else "best"
        self.accelerator.wait_for_everyone()
        target = self.ema.module if kind == "best_ema" else self.accelerator.unwrap_model(self.model)
        if self.cfg.save_best:
            path = self.checkpoint_path(kind)
            load_model_weights(target, load_checkpoint(path)["model"], source=str(path))
        return target

    def close(self) -> None:
        """Flush and close the trackers (call once training and final evaluation are done)."""
        if self.cfg.tracker != "none":
            self.accelerator.end_training()
