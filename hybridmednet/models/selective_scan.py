"""Mamba's selective state-space scan.

Uses the fused CUDA kernel from ``mamba_ssm`` when that package is installed and the tensors are on
a GPU; everywhere else a plain-PyTorch implementation with the same signature and the same maths.
The plain version solves the linear recurrence ``h_t = a_t * h_{t-1} + b_t`` with a Hillis-Steele
parallel scan (log2(L) vectorised steps instead of an L-step Python loop) and has a hand-written
backward pass, so autograd keeps two [B, D, L, N] tensors per scan rather than one per scan level.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

try:  # optional dependency: the fused kernel from the Mamba authors
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _fused_selective_scan
except ImportError:
    _fused_selective_scan = None


def _parallel_linear_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve h_t = a_t * h_{t-1} + b_t (h_{-1} = 0) along dim -2. a, b: [..., L, N] -> h: [..., L, N]."""
    a, b = a.clone(), b.clone()
    length = a.shape[-2]
    step = 1
    while step < length:
        # Compose each element with the partial result `step` positions earlier; the right-hand
        # sides are evaluated before the in-place writes, so every update reads the old values.
        b[..., step:, :] = b[..., step:, :] + a[..., step:, :] * b[..., :-step, :]
        a[..., step:, :] = a[..., step:, :] * a[..., :-step, :]
        step *= 2
    return b


class _LinearRecurrence(torch.autograd.Function):
    """h = scan(a, b) with the adjoint recurrence as backward: g_t = dL/dh_t + a_{t+1} g_{t+1}."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h = _parallel_linear_scan(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):
        a, h = ctx.saved_tensors
        a_next = torch.cat([a[..., 1:, :], torch.zeros_like(a[..., :1, :])], dim=-2)
        grad_b = _parallel_linear_scan(a_next.flip(-2), grad_h.flip(-2)).flip(-2)
        h_prev = torch.cat([torch.zeros_like(h[..., :1, :]), h[..., :-1, :]], dim=-2)
        return grad_b * h_prev, grad_b


def linear_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Differentiable h_t = a_t * h_{t-1} + b_t along dim -2 of [..., L, N] tensors."""
    return _LinearRecurrence.apply(a, b)


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor,
    delta_bias: torch.Tensor,
) -> torch.Tensor:
    """Plain-PyTorch selective scan, in at least float32 (the exp/product chain is unsafe in half precision).

    Shapes follow ``mamba_ssm``: u, delta, z [Bt, D, L]; A [D, N]; B, C [Bt, N, L]; D, delta_bias [D].
    Returns y [Bt, D, L] = (C_t . h_t + D * u_t) * silu(z_t), h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t.
    """
    out_dtype = u.dtype
    dtype = torch.promote_types(u.dtype, torch.float32)
    with torch.autocast(device_type=u.device.type, enabled=False):
        u, delta, A, B, C, D, z, delta_bias = (t.to(dtype) for t in (u, delta, A, B, C, D, z, delta_bias))
        delta = F.softplus(delta + delta_bias[:, None])                          # [Bt, D, L]
        decay = torch.exp(delta.unsqueeze(-1) * A[:, None, :])                   # [Bt, D, L, N]
        drive = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)       # [Bt, D, L, N]
        h = linear_recurrence(decay, drive)                                      # [Bt, D, L, N]
        y = torch.einsum("bdln,bnl->bdl", h, C) + D[:, None] * u
        y = y * F.silu(z)
    return y.to(out_dtype)


def selective_scan(u, delta, A, B, C, D, z, delta_bias) -> torch.Tensor:
    """Selective scan with softplus on delta: fused kernel on CUDA when available, else plain PyTorch.

    When training, the plain version is recomputed in the backward pass (activation checkpointing)
    like the fused kernel does, so only the [Bt, D, L] inputs are stored instead of [Bt, D, L, N] states.
    """
    if _fused_selective_scan is not None and u.is_cuda:
        return _fused_selective_scan(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=True)
    if torch.is_grad_enabled():
        return checkpoint(selective_scan_torch, u, delta, A, B, C, D, z, delta_bias, use_reentrant=False)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias)
