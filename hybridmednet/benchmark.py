"""Measure every backbone x attention setting: parameters, GFLOPs, latency per image, peak memory.

    python hybridmednet/benchmark.py --backbones convnext_tiny,swin_tiny --image_size 224 --output table.md

GFLOPs come from ``torch.utils.flop_counter`` (a multiply-add counts as 2 FLOPs; matmuls,
convolutions and attention are counted, element-wise ops such as the Mamba scan's exp/mul are
not). Latency is the median of ``--repeats`` batch-1 forward passes after 2 warm-up passes; peak
memory is the activation memory of that forward pass (weights excluded). Models are untrained
(pretrained weights do not change any of these numbers).
"""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from hybridmednet.configs.default_config import Config
from hybridmednet.models.attention import ATTENTION_SETTINGS
from hybridmednet.models.backbones import BACKBONES
from hybridmednet.models.hybrid_med_net import HybridMedNet
from hybridmednet.profiling import count_flops, count_parameters, median_latency, peak_memory
from shared import ConfigError, parse_cli, run_cli, write_json

SMALL_BACKBONES = ["convnext_tiny", "swin_tiny", "efficientnetv2_s", "resnet34", "vim_tiny"]


@dataclass
class BenchmarkConfig:
    backbones: str = ",".join(SMALL_BACKBONES)  # comma-separated backbone names (models/backbones.py BACKBONES)
    attention: str = ",".join(ATTENTION_SETTINGS)  # comma-separated attention settings (cbam, cbam+cross, mhsa, mhsa+cross)
    image_size: int = 224  # input height and width, pixels
    repeats: int = 5  # timed batch-1 forward passes; the median is reported
    threads: int = 0  # torch CPU threads; 0 = torch's default
    device: str = "cpu"  # cpu | cuda
    output: str = ""  # write the markdown table here (and a .json next to it)


def names(spec: str, valid: Iterable[str], key: str) -> list[str]:
    """The comma-separated names of ``spec``, each checked against ``valid``."""
    chosen, valid = [name.strip() for name in spec.split(",") if name.strip()], list(valid)
    unknown = [name for name in chosen if name not in valid]
    if unknown or not chosen:
        raise ConfigError(f"--{key}: unknown or no names {unknown}; choose comma-separated names from {valid}")
    return chosen


@dataclass
class BenchmarkRow:
    backbone: str
    attention: str
    params_m: float
    gflops: float
    latency_ms: float
    peak_memory_mb: float


def build_variant(backbone: str, attention: str, config: Config | None = None) -> HybridMedNet:
    """HybridMedNet with ``backbone`` and a named attention setting (other keys from ``config``), untrained."""
    config = config or Config()
    config.MODEL["backbone"], config.MODEL["pretrained"] = backbone, False
    config.MODEL["use_modern_attention"], config.MODEL["use_cross_scale_attention"] = ATTENTION_SETTINGS[attention]
    return HybridMedNet(config)


@torch.no_grad()
def measure(backbone: str, attention: str, image_size: int, repeats: int, device: torch.device) -> BenchmarkRow:
    model = build_variant(backbone, attention).to(device).eval()
    image = torch.randn(1, 3, image_size, image_size, device=device)

    def forward():
        model(image)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return BenchmarkRow(
        backbone, attention, count_parameters(model) / 1e6, count_flops(model, image) / 1e9,
        median_latency(forward, repeats=repeats) * 1e3, peak_memory(forward, device) / 2**20,
    )


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"{cpu_name()}, {torch.get_num_threads()} CPU thread(s), "
            f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the end")


def markdown_table(rows: Sequence[BenchmarkRow], image_size: int, machine: str) -> str:
    lines = [
        f"Measured at {image_size}x{image_size}, batch 1, on {machine}.",
        "",
        "| backbone | attention | params (M) | GFLOPs | latency (ms/image) | peak activation memory (MB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r.backbone} | {r.attention} | {r.params_m:.1f} | {r.gflops:.2f} | {r.latency_ms:.0f} | "
              f"{r.peak_memory_mb:.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> list[BenchmarkRow]:
    args = parse_cli(BenchmarkConfig, argv, description=__doc__.split("\n\n")[0])
    backbones = names(args.backbones, BACKBONES, "backbones")
    attentions = names(args.attention, ATTENTION_SETTINGS, "attention")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for backbone in backbones:
        for attention in attentions:
            rows.append(measure(backbone, attention, args.image_size, args.repeats, device))
            print(f"{backbone:<18} {attention:<11} {rows[-1].params_m:6.1f}M {rows[-1].gflops:7.2f} GFLOPs "
                  f"{rows[-1].latency_ms:7.0f} ms {rows[-1].peak_memory_mb:6.0f} MB", flush=True)
    table = markdown_table(rows, args.image_size, machine_description(device))
    print(table)
    if args.output:
        output = Path(args.output)
        output.write_text(table)
        write_json(output.with_suffix(".json"), [asdict(r) for r in rows], indent=1)
    return rows


if __name__ == "__main__":
    run_cli(main)
