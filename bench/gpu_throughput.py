"""Training throughput of three recipes, as images/s, achieved TFLOP/s and fraction of measured peak.

Workloads: convnext_cxr (ConvNeXt-Large at 224/512 px), clip_medical (StarNet image x BERT-base text
towers), alzheimer_mosa (Mosa at 128^3). Recipes (same model, data and batch):
  a_source   the source repos' recipe: fp16 autocast + GradScaler, NCHW, plain AdamW, an EMA that
             rebuilds every weight tensor each step (``ema = d * ema + (1 - d) * w`` per tensor)
  b_default  this project's default: bf16 autocast, channels_last, fused AdamW, timm ModelEmaV3
             (in-place foreach lerp)
  c_compile  b_default + torch.compile

FLOPs per step are 3 x the forward FLOPs counted by ``torch.utils.flop_counter`` (see ``count_flops``); the peak is a large
bf16 matmul measured in the same run (fp32 on CPU). Runs on CPU with ``--small`` so it stays tested;
the real numbers need an NVIDIA GPU:

    python bench/gpu_throughput.py                       # convnext_cxr default model, 224 and 512 px
    python bench/gpu_throughput.py --models convnext_cxr clip_medical alzheimer_mosa
    python bench/gpu_throughput.py --small --steps 3     # CPU smoke run
"""
from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
from timm.utils import ModelEmaV3
from torch.utils.flop_counter import FlopCounterMode

from bench.common import print_table, timed, write_json
from shared.engine import fused_optimizer_kwargs
from shared.losses import AsymmetricLoss


@dataclass
class Workload:
    """A model, how to make a batch for it (``(inputs tuple, targets)``) and its loss; ``sizes`` are
    the input sizes (image side or volume side) to measure."""
    build: Callable[[int], nn.Module]  # input size -> model
    make_batch: Callable[[int, int, torch.device], tuple]
    loss_fn: Callable
    sizes: tuple[int, ...]
    batch_size: int
    memory_format: torch.memory_format = torch.channels_last  # channels_last_3d for volumes


def _cxr(small: bool) -> Workload:
    """convnext_cxr's default model (ConvNeXt-Large + attention heads), 14 findings, ASL."""
    from convnext_cxr.model import CXRClassifier, ModelConfig
    cfg = (ModelConfig(backbone="convnext_atto", pretrained=False, embed_dim=64, num_heads=4, head_hidden_dim=32)
           if small else ModelConfig(pretrained=False))

    def batch(n, size, device):
        return (torch.randn(n, 3, size, size, device=device),), (torch.rand(n, 14, device=device) > 0.8).float()
    return Workload(lambda size: CXRClassifier(cfg), batch, AsymmetricLoss(), (64,) if small else (224, 512),
                    4 if small else 32)


def _clip(small: bool) -> Workload:
    """clip_medical's default: StarNet dual-pyramid RCF image tower x BERT-base text tower (random init:
    the benchmark needs the shapes, not bert-base-chinese's weights), 4 class texts of 32 tokens."""
    from transformers import BertConfig, BertModel

    from clip_medical.losses import class_logits, multi_positive_contrastive_loss
    from clip_medical.models.clip import CLIPModel
    from clip_medical.models.image_encoders import build_image_encoder
    bert = (BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
            if small else BertConfig(vocab_size=21128))  # bert-base-chinese's size
    classes, tokens = 4, 32

    def build(size):
        image = build_image_encoder("resnet18" if small else "starnet_dual_pyramid_rcf", pretrained=False,
                                    img_size=size)
        return CLIPModel(image, BertModel(bert, add_pooling_layer=False), embed_dim=512)

    def batch(n, size, device):
        ids = torch.randint(1000, bert.vocab_size, (classes, tokens), device=device)
        inputs = (torch.randn(n, 3, size, size, device=device), ids, torch.ones_like(ids))
        return inputs, torch.randint(0, classes, (n,), device=device)

    def loss(outputs, labels):
        image_emb, text_emb, scale = outputs
        return multi_positive_contrastive_loss(class_logits(image_emb, text_emb, scale), labels)
    return Workload(build, batch, loss, (64,) if small else (224,), 4 if small else 64)


def _mosa(small: bool) -> Workload:
    """alzheimer_mosa's default Mosa (3D ResNet-18 + per-scale transformers), 128^3 volumes, 2 classes."""
    from alzheimer_mosa.config import Config
    from alzheimer_mosa.model_builder import build_mosa
    from shared.config import config_from_dict
    settings = {"backbone": {"width": 8, "model_type": "resnet10_3d"}, "mosa": {"embed_dim": 16, "depth": 1}} \
        if small else {}

    def build_for(size):
        return build_mosa(config_from_dict(Config, {**settings, "data": {"target_size": [size] * 3}}))

    def batch(n, size, device):
        return (torch.randn(n, 1, size, size, size, device=device),), torch.randint(0, 2, (n,), device=device)
    return Workload(build_for, batch, nn.CrossEntropyLoss(), (16,) if small else (128,), 2 if small else 8,
                    torch.channels_last_3d)


WORKLOADS: dict[str, Callable[[bool], Workload]] = {"convnext_cxr": _cxr, "clip_medical": _clip,
                                                    "alzheimer_mosa": _mosa}


class FullCopyEMA:
    """The source repos' EMA: a new tensor per weight per step (no foreach, no in-place lerp)."""

    def __init__(self, model: nn.Module, decay: float = 0.9998):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[key] = self.decay * self.shadow[key] + (1 - self.decay) * value.detach()
            else:
                self.shadow[key] = value.detach().clone()


RECIPES = {
    "a_source": dict(dtype=torch.float16, channels_last=False, fused=False, ema="full_copy", compile=False),
    "b_default": dict(dtype=torch.bfloat16, channels_last=True, fused=True, ema="timm_v3", compile=False),
    "c_compile": dict(dtype=torch.bfloat16, channels_last=True, fused=True, ema="timm_v3", compile=True),
}


def matmul_peak_tflops(device: torch.device) -> float:
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    iters = 50 if device.type == "cuda" else 5
    seconds = timed(lambda: [a @ b for _ in range(iters)])
    return 2 * n ** 3 * iters / seconds / 1e12


def count_flops(workload: Workload, base_model: nn.Module, size: int, batch_size: int, device: torch.device) -> int:
    """Model FLOPs of one training step, as 3 x the forward pass (backward costs two forwards: the usual
    convention). torch's counter is used on the forward only: its ``convolution_backward`` formula ignores
    ``groups`` and counts ConvNeXt's depthwise-convolution backward ~100x too high (torch 2.11-2.14)."""
    model = copy.deepcopy(base_model).to(device)
    inputs, targets = workload.make_batch(batch_size, size, device)
    with FlopCounterMode(display=False) as counter, \
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        workload.loss_fn(model(*inputs), targets)
    del model, inputs, targets
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 3 * counter.get_total_flops()


def print_profile(step: Callable[[], None], steps: int, seconds_per_step: float, device: torch.device) -> None:
    """The kernels that take the time, and how busy the GPU is: busy << 100 % means launch/CPU-bound."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(events.table(sort_by=key, row_limit=12, max_name_column_width=60))
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_s = sum(e.self_device_time_total for e in kernels) / 1e6 / steps
        print(f"GPU busy {busy_s * 1e3:.1f} ms of a {seconds_per_step * 1e3:.1f} ms step ({100 * busy_s / seconds_per_step:.0f} %)")


def run_recipe(workload: Workload, recipe: dict, size: int, batch_size: int, steps: int, warmup: int,
               device: torch.device, base_model: nn.Module, profile: bool = False) -> dict:
    model = copy.deepcopy(base_model).to(device)
    if recipe["channels_last"]:
        model = model.to(memory_format=workload.memory_format)
    # (a) gets PyTorch's default AdamW (foreach on CUDA), as the source document's plain ``AdamW(params)``
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                  **(fused_optimizer_kwargs("adamw", device) if recipe["fused"] else {}))
    scaler = torch.amp.GradScaler(device.type) if recipe["dtype"] == torch.float16 else None
    ema = FullCopyEMA(model) if recipe["ema"] == "full_copy" else ModelEmaV3(model, decay=0.9998)
    step_model = torch.compile(model) if recipe["compile"] else model
    inputs, targets = workload.make_batch(batch_size, size, device)
    if recipe["channels_last"]:  # the image/volume input; token ids stay as they are
        inputs = (inputs[0].contiguous(memory_format=workload.memory_format), *inputs[1:])

    def step():
        with torch.autocast(device.type, dtype=recipe["dtype"]):
            loss = workload.loss_fn(step_model(*inputs), targets)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(lambda: [step() for _ in range(steps)])
    peak_gb = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    if profile:
        print_profile(step, steps=3, seconds_per_step=seconds / steps, device=device)
    return {"images_per_s": steps * batch_size / seconds, "seconds_per_step": seconds / steps, "peak_mem_gb": peak_gb}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["convnext_cxr"], choices=sorted(WORKLOADS))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="override the model's sizes")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="tiny model variant (CPU smoke run)")
    parser.add_argument("--profile", action="store_true", help="print each recipe's top kernels and GPU busy time")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_peak_tflops(device)
    print(f"measured matmul peak: {peak:.3g} TFLOP/s ({'bf16' if device.type == 'cuda' else 'fp32'}, {device})")
    rows, results = [], []
    for name in args.models:
        workload = WORKLOADS[name](args.small)
        batch_size = args.batch_size or workload.batch_size
        for size in args.sizes or workload.sizes:
            torch.manual_seed(0)
            base_model = workload.build(size)
            flops = count_flops(workload, base_model, size, batch_size, device)
            baseline = None
            for recipe in args.recipes:
                try:
                    r = run_recipe(workload, RECIPES[recipe], size, batch_size, args.steps, args.warmup, device,
                                   base_model, args.profile)
                except (torch.OutOfMemoryError, RuntimeError) as error:  # recorded in the table, not hidden
                    print(f"{name} {size} {recipe}: FAILED {type(error).__name__}: {str(error).splitlines()[0]}")
                    results.append({"model": name, "size": size, "recipe": recipe, "batch_size": batch_size,
                                    "error": f"{type(error).__name__}: {str(error).splitlines()[0]}"})
                    rows.append([name, size, recipe, batch_size, "failed", "", "", "", ""])
                    continue
                tflops = flops / r["seconds_per_step"] / 1e12
                baseline = baseline or r["images_per_s"]
                result = {"model": name, "size": size, "recipe": recipe, "batch_size": batch_size,
                          "gflops_per_step": flops / 1e9, "achieved_tflops": tflops, "fraction_of_peak": tflops / peak,
                          "speedup_vs_first": r["images_per_s"] / baseline, **r}
                results.append(result)
                rows.append([name, size, recipe, batch_size, r["images_per_s"], tflops, f"{100 * tflops / peak:.1f}%",
                             r["peak_mem_gb"], r["images_per_s"] / baseline])
                print(f"{name} {size} {recipe}: {r['images_per_s']:.1f} img/s, {tflops:.1f} TFLOP/s", flush=True)
                torch._dynamo.reset()  # drop compiled graphs (and the model copies they hold) between recipes
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    table = print_table(["model", "size", "recipe", "batch", "img/s", "TFLOP/s", "of peak", "peak mem GB",
                         f"x {args.recipes[0]}"], rows)
    payload = {"benchmark": "gpu_throughput", "args": vars(args), "device": str(device),
               "matmul_peak_tflops": peak, "results": results, "table": table}
    write_json("gpu_throughput" + ("_small" if args.small else ""), payload, args.out)
    return payload


if __name__ == "__main__":
    main()
