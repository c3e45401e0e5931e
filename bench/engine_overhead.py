"""Engine overhead: convnext_cxr's training step through the shared Engine vs a bare PyTorch loop.

Same model (weights copied), data, batch and precision, in one process, runs alternating so that
machine noise hits both. The engine step includes what the bare loop lacks: EMA update, per-step
scheduler, non-finite-loss bookkeeping, TensorBoard logging and Accelerate's wrappers.

    python bench/engine_overhead.py [--steps 30 --repeats 5 --image-size 64 --backbone resnet18]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from typing import Sequence

import torch
from torch.utils.data import DataLoader, TensorDataset

from bench.common import print_table, timed, write_json
from convnext_cxr.model import CXRClassifier, ModelConfig
from shared import AsymmetricLoss, Engine, MultiLabelTask, TrainConfig


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
    # A model with a short CPU step (dense convolutions) is the stricter test of the loop's overhead.
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="bf16" if torch.cuda.is_available() else "no")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/engine_overhead.json)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    n = args.steps * args.batch_size
    data = TensorDataset(torch.randn(n, 3, args.image_size, args.image_size), (torch.rand(n, 14) > 0.8).float())
    model_cfg = ModelConfig(backbone=args.backbone, pretrained=False, embed_dim=96, num_heads=4, head_hidden_dim=64,
                            drop_path_rate=0.0, dropout=0.0)
    model = CXRClassifier(model_cfg)
    bare_model = copy.deepcopy(model)
    cfg = TrainConfig(output_dir=tempfile.mkdtemp(prefix="bench_engine_"), epochs=args.repeats + 1,
                      batch_size=args.batch_size, num_workers=0, mixed_precision=args.precision,
                      progress_bar=False, log_every=10, warmup_epochs=0.5, ema=True)
    engine = Engine(cfg, model, MultiLabelTask(AsymmetricLoss(), [str(i) for i in range(14)]), data, None)

    device = engine.accelerator.device
    bare_model.to(device)
    if engine.channels_last:
        bare_model.to(memory_format=torch.channels_last)
    bare_optimizer = torch.optim.AdamW(bare_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                       fused=device.type == "cuda")
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True)
    loss_fn = AsymmetricLoss()

    def run_engine():
        engine.train_one_epoch()

    def run_bare():
        bare_epoch(bare_model, bare_optimizer, loss_fn, loader, device, args.precision, cfg.grad_clip)

    run_engine(), run_bare()  # warm-up: allocator, autotuning, first-iteration costs
    engine_times, bare_times = [], []
    for _ in range(args.repeats):
        engine_times.append(timed(run_engine))
        bare_times.append(timed(run_bare))
    engine.close()
    engine_rate = args.steps / statistics.median(engine_times)
    bare_rate = args.steps / statistics.median(bare_times)
    ratio = engine_rate / bare_rate
    table = print_table(["loop", "steps/s (median of %d)" % args.repeats, "ratio vs bare"],
                        [["bare PyTorch", bare_rate, 1.0], ["shared Engine", engine_rate, ratio]])
    result = {"benchmark": "engine_overhead", "args": vars(args), "bare_steps_per_s": bare_rate,
              "engine_steps_per_s": engine_rate, "ratio": ratio, "engine_times": engine_times,
              "bare_times": bare_times, "table": table}
    write_json("engine_overhead", result, args.out)
    return result


if __name__ == "__main__":
    main()
