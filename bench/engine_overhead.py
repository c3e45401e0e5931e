"""Engine overhead: convnext_cxr's training step through the shared Engine vs a bare PyTorch loop.

Same model (weights copied), data, batch and precision, in one process, runs alternating so that
machine noise hits all of them. The engine step includes what the bare loop lacks: EMA update, per-step
scheduler, non-finite-loss bookkeeping, TensorBoard logging and Accelerate's wrappers. A third run, the
Engine with EMA off, splits the overhead into the EMA update (memory-bound: it reads and writes every
weight each step) and the engine's own bookkeeping.

    python bench/engine_overhead.py [--steps 20 --repeats 7 --image-size 96 --backbone resnet18]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
from typing import Sequence

import torch
from torch.utils.data import DataLoader, TensorDataset

from bench.common import print_table, timed, write_json
from convnext_cxr.model import CXRClassifier, ModelConfig
from shared import AsymmetricLoss, Engine, MultiLabelTask, TrainConfig
from shared.engine import fused_optimizer_kwargs


def bare_epoch(model, optimizer, loss_fn, loader, device, precision, grad_clip) -> None:
    """The loop a researcher writes by hand: forward, loss, backward, clip, step."""
    model.train()
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(model(images), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A small model with a short CPU step (dense convolutions) exposes the loop's overhead. The EMA update
    # costs the same at any image size (it touches each of the 11.5M weights 3 times, ~6 ms on 2 cores), so
    # the smaller the image, the larger its share: ~6 % of a step at 64 px, ~2 % at 96 px.
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=7, help="alternating rounds; medians are reported")
    parser.add_argument("--precision", default="bf16" if torch.cuda.is_available() else "no")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/engine_overhead.json)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    n = args.steps * args.batch_size
    data = TensorDataset(torch.randn(n, 3, args.image_size, args.image_size), (torch.rand(n, 14) > 0.8).float())
    model_cfg = ModelConfig(backbone=args.backbone, pretrained=False, embed_dim=96, num_heads=4, head_hidden_dim=64,
                            drop_path_rate=0.0, dropout=0.0)
    model = CXRClassifier(model_cfg)
    bare_model, no_ema_model = copy.deepcopy(model), copy.deepcopy(model)
    cfg = TrainConfig(output_dir=tempfile.mkdtemp(prefix="bench_engine_"), epochs=args.repeats + 1,
                      batch_size=args.batch_size, num_workers=0, mixed_precision=args.precision,
                      progress_bar=False, log_every=10, warmup_epochs=0.5, ema=True)
    labels = [str(i) for i in range(14)]
    engine = Engine(cfg, model, MultiLabelTask(AsymmetricLoss(), labels), data, None)
    no_ema_cfg = dataclasses.replace(cfg, output_dir=tempfile.mkdtemp(prefix="bench_engine_"), ema=False)
    no_ema_engine = Engine(no_ema_cfg, no_ema_model, MultiLabelTask(AsymmetricLoss(), labels), data, None)

    device = engine.accelerator.device
    bare_model.to(device)
    if engine.channels_last:
        bare_model.to(memory_format=torch.channels_last)
    bare_optimizer = torch.optim.AdamW(bare_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                       **fused_optimizer_kwargs(cfg.optimizer, device))  # as the Engine's
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True)
    loss_fn = AsymmetricLoss()

    runs = {"engine": engine.train_one_epoch, "engine_no_ema": no_ema_engine.train_one_epoch,
            "bare": lambda: bare_epoch(bare_model, bare_optimizer, loss_fn, loader, device, args.precision,
                                       cfg.grad_clip)}
    for run in runs.values():  # warm-up: allocator, autotuning, first-iteration costs
        run()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
    engine.close()
    no_ema_engine.close()
    rates = {name: args.steps / statistics.median(values) for name, values in times.items()}
    ratio = rates["engine"] / rates["bare"]
    table = print_table(["loop", "steps/s (median of %d)" % args.repeats, "ratio vs bare"],
                        [["bare PyTorch", rates["bare"], 1.0], ["shared Engine", rates["engine"], ratio],
                         ["shared Engine, EMA off (breakdown)", rates["engine_no_ema"],
                          rates["engine_no_ema"] / rates["bare"]]])
    result = {"benchmark": "engine_overhead", "args": vars(args), "bare_steps_per_s": rates["bare"],
              "engine_steps_per_s": rates["engine"], "ratio": ratio,
              "engine_no_ema_steps_per_s": rates["engine_no_ema"],
              "no_ema_ratio": rates["engine_no_ema"] / rates["bare"], "engine_times": times["engine"],
              "engine_no_ema_times": times["engine_no_ema"], "bare_times": times["bare"], "table": table}
    write_json("engine_overhead", result, args.out)
    return result


if __name__ == "__main__":
    main()
