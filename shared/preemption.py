"""Pre-emption and mid-epoch checkpoints: a killed or pre-empted job loses at most one optimizer step.

During :meth:`Engine.fit`, SIGTERM (a scheduler's pre-emption, ``kill``) and SIGINT (Ctrl-C) no longer kill
the process at once: the engine finishes the current optimizer step, writes ``checkpoint_latest`` with the
full resume state plus the epoch's progress (:class:`EpochProgress`: the batches already done and the running
loss sums), prints the command line that resumes, closes the trackers and exits with 143 (SIGTERM) or 130
(SIGINT). A second signal stops at once. The previous handlers are restored when ``fit`` ends.
``train.save_every_steps`` writes the same mid-epoch checkpoint every N optimizer steps.

A resumed mid-epoch checkpoint continues its epoch: the batches already done are skipped without being
loaded (Accelerate's ``skip_first_batches``). The epoch's order is a function of (seed, epoch) and every
sample's augmentation draws a function of (seed, epoch, its position in that order) (shared/loaders.py), so
the remaining batches are exactly the uninterrupted run's whatever ``num_workers`` and however many batches
are skipped; the main process's Python/NumPy/torch/CUDA generators (dropout, MixUp) are restored as saved at
the step. So with randomness in the model and the augmentations, the resumed run's weights equal an
uninterrupted run's bit for bit, with any ``num_workers``, as long as the model's own kernels are
deterministic (tests/test_fault_injection.py kills runs with SIGKILL and SIGTERM at random steps).
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import torch
from accelerate import skip_first_batches

from .checkpoint import save_checkpoint
from .resume import checkpoint_state

if TYPE_CHECKING:
    from accelerate import Accelerator

    from .engine import Engine

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + the signal number, as a shell reports it


@dataclass
class EpochProgress:
    """The running sums of one training epoch (per process), saved in a mid-epoch checkpoint so that the
    resumed epoch reports the same ``train/*`` means and step losses as an uninterrupted one."""

    window_start: int  # global step at which the current train_step/loss window began
    loss_sum: torch.Tensor
    window_sum: torch.Tensor
    nonfinite: torch.Tensor
    batches: int = 0  # batches of this epoch done so far (all of them optimizer-step complete when saved)
    window_batches: int = 0
    scalar_sums: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def start(cls, engine: "Engine") -> "EpochProgress":
        """Zeros, or the progress of the mid-epoch checkpoint the engine resumed from (used once)."""
        device = engine.accelerator.device
        saved, engine.partial_epoch = engine.partial_epoch, None
        zero = torch.zeros((), device=device)
        progress = cls(engine.global_step, zero.clone(), zero.clone(), zero.clone())
        if saved:
            progress.batches, progress.window_batches = int(saved["batches"]), int(saved["window_batches"])
            progress.window_start = int(saved["window_start"])
            progress.loss_sum = saved["loss_sum"].to(device)
            progress.window_sum = saved["window_sum"].to(device)
            progress.scalar_sums = {k: v.to(device) for k, v in saved["scalar_sums"].items()}
        return progress

    def loader(self, train_loader):
        """``train_loader``, without the batches already done (they are neither loaded nor transformed)."""
        return skip_first_batches(train_loader, self.batches) if self.batches else train_loader

    def add(self, loss: torch.Tensor, outputs: Mapping[str, Any]) -> None:
        """Count one batch: its loss (NaN/Inf counted, summed as 0) and any other 0-d outputs, e.g. accuracy."""
        detached = loss.detach().float()
        self.nonfinite += ~torch.isfinite(detached)
        finite_loss = torch.nan_to_num(detached, nan=0.0, posinf=0.0, neginf=0.0)
        self.loss_sum += finite_loss
        self.window_sum += finite_loss
        for key, value in outputs.items():
            if key != "loss" and isinstance(value, torch.Tensor) and value.ndim == 0:
                self.scalar_sums[key] = self.scalar_sums.get(key, 0.0) + value.detach().float()
        self.batches += 1
        self.window_batches += 1

    def reset_window(self, step: int) -> None:
        self.window_sum.zero_()
        self.window_batches, self.window_start = 0, step

    def means(self, acc: "Accelerator", optimizer) -> dict[str, float]:
        """The epoch's ``train/*`` values, averaged over the processes."""
        n = max(self.batches, 1)
        means = {f"train/{key}": acc.reduce(total, "mean").item() / n for key, total in self.scalar_sums.items()}
        return {"train/loss": acc.reduce(self.loss_sum, "mean").item() / n, **means,
                "train/lr": optimizer.param_groups[0]["lr"]}

    def state_dict(self, acc: "Accelerator") -> dict:
        """The sums averaged over the processes (the epoch's means are linear in them), as CPU tensors.
        Every process must call this (it reduces)."""
        def mean(t):
            return acc.reduce(t.detach().clone(), "mean").cpu()
        return {"batches": self.batches, "window_batches": self.window_batches, "window_start": self.window_start,
                "loss_sum": mean(self.loss_sum), "window_sum": mean(self.window_sum),
                "scalar_sums": {k: mean(v) for k, v in sorted(self.scalar_sums.items())}}


def save_latest(engine: "Engine", progress: EpochProgress | None) -> None:
    """``checkpoint_latest`` now: at the end of epoch ``engine.epoch`` (``progress`` None) or mid-epoch, with
    the epoch's progress. Called on every process."""
    acc = engine.accelerator
    partial = progress.state_dict(acc) if progress is not None else None
    if acc.is_main_process:
        metrics = engine.history[-1] if engine.history else {}
        epoch = engine.epoch if progress is not None else engine.epoch + 1
        state = checkpoint_state(engine, "latest", epoch, metrics)
        save_checkpoint({**state, "partial_epoch": partial}, engine.checkpoint_path("latest"))
    acc.wait_for_everyone()


def resume_hint(engine: "Engine") -> str:
    """The command line that continues this run: this process's own, with ``--train.resume true`` (and, when
    the run had resumed from another file, ``--train.resume_checkpoint`` naming this run's latest checkpoint)."""
    argv, kept, skip = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv])), [], False
    for arg in argv:  # drop an earlier --train.resume(_checkpoint) [value]
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in ("--train.resume", "--train.resume_checkpoint"):
            skip = "=" not in arg
        else:
            kept.append(arg)
    extra = ["--train.resume", "true"]
    if engine.cfg.resume_checkpoint:
        extra += ["--train.resume_checkpoint", str(engine.checkpoint_path("latest"))]
    return shlex.join([*kept, *extra])


class Preemption:
    """SIGTERM/SIGINT handling and step-count checkpoints for one engine (see the module docstring)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Catch SIGTERM and SIGINT until :meth:`restore` (only possible in the main thread)."""
        self.signum = None
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in EXIT_CODES:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # the second signal: stop now
            self.restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(EXIT_CODES[signum])
        self.signum = signum
        os.write(2, f"\n{signal.Signals(signum).name} received: finishing the current optimizer step, then saving "
                    f"checkpoint_latest (send it again to stop at once)\n".encode())

    def _requested(self, acc: "Accelerator") -> int:
        """The signal any process received (0 for none): every process stops at the same step."""
        if acc.num_processes == 1:
            return self.signum or 0
        flags = torch.tensor([float(self.signum == s) for s in EXIT_CODES], device=acc.device)
        received = acc.reduce(flags, "sum").tolist()
        return next((int(s) for s, n in zip(EXIT_CODES, received) if n > 0), 0)

    def after_step(self, engine: "Engine", progress: EpochProgress) -> None:
        """After each batch: at an optimizer step, save for ``save_every_steps``, or save and exit on a signal."""
        acc, every = engine.accelerator, engine.cfg.save_every_steps
        if not acc.sync_gradients:
            return
        signum = self._requested(acc)
        if signum or (every > 0 and engine.global_step % every == 0):
            engine._check_finite(progress.nonfinite, progress.window_start)  # never save NaN weights
            save_latest(engine, progress)
        if signum:
            self.exit(engine, signum, f"epoch {engine.epoch + 1}, after batch {progress.batches} (step "
                                      f"{engine.global_step})")

    def after_epoch(self, engine: "Engine", saved: bool) -> None:
        """At the end of an epoch: on a signal, save (unless that epoch's checkpoint was just written) and exit."""
        signum = self._requested(engine.accelerator)
        if signum:
            if not saved:
                save_latest(engine, None)
            self.exit(engine, signum, f"the end of epoch {engine.epoch + 1} (step {engine.global_step})")

    def exit(self, engine: "Engine", signum: int, where: str) -> None:
        engine.accelerator.print(
            f"stopped by {signal.Signals(signum).name} at {where}; saved {engine.checkpoint_path('latest')}. "
            f"Resume with: {resume_hint(engine)}", flush=True)
        raise SystemExit(EXIT_CODES[signum])  # fit closes the trackers on the way out
