"""Measuring a model: parameters, FLOPs (torch's flop counter), latency and peak activation memory.

Peak memory on CPU has no allocator statistics, so :class:`PeakTensorMemory` counts it itself: it
sees every tensor an operator creates, counts each storage once (views share one) until Python frees
it, and keeps the maximum. On CUDA, ``torch.cuda.max_memory_allocated`` is used instead.
"""
from __future__ import annotations

import statistics
import time
import weakref
from typing import Callable

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage created (and still alive) while the mode is active.

    Tensors that existed before entering (parameters, the input) are not counted, nor are views of them.
    """

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in self._live or key in inputs:
                continue  # a view or in-place result (e.g. a transposed weight): no new memory
            self._live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._release, key)
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, inputs: torch.Tensor) -> int:
    """Forward FLOPs (a multiply-add counts 2) of matmuls, convolutions and attention.

    Attention runs on SDPA's math backend while counting: it is made of matmuls, which every torch
    version's flop counter counts, whereas a fused kernel is counted only where that version registered a
    formula for it (torch 2.14 counted 0 for the CPU flash kernel). The count is the same work either way.
    """
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(inputs)
    return counter.get_total_flops()


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes of the tensors ``fn()`` allocates (e.g. activations of a forward pass; weights excluded)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - baseline
    with PeakTensorMemory() as tracker:
        fn()
    return tracker.peak


def median_latency(fn: Callable[[], object], warmup: int = 2, repeats: int = 5) -> float:
    """Median wall-clock seconds of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
