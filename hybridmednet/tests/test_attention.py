"""The attention modules are real attention with bounded keys/values; the fusion weights are a softmax."""
from __future__ import annotations

import torch
from timm.layers.cbam import CbamModule

from hybridmednet.models.attention import CrossScaleAttention, MultiScaleAttention, PooledSelfAttention
from hybridmednet.models.fusion import DynamicFeatureFusion
from hybridmednet.profiling import count_flops, peak_memory

STRIDES = (4, 8, 16, 32)


def _pyramid(image_size: int, dim: int = 32) -> list[torch.Tensor]:
    return [torch.randn(1, dim, image_size // s, image_size // s) for s in STRIDES]


def _attention_flops(module: torch.nn.Module, run) -> int:
    """The attention work itself, counted from the shapes every MultiHeadAttention sees during ``run()``:
    scores Q K^T and the weighted sum A V, 2 x (Nq x Nk x C) multiply-adds per image, 2 FLOPs each."""
    flops = []
    hooks = [m.register_forward_hook(lambda _m, args, _out: flops.append(4 * args[0].shape[0] * args[0].shape[1]
                                                                          * args[1].shape[1] * args[0].shape[2]))
             for m in module.modules() if type(m).__name__ == "MultiHeadAttention"]
    run()
    for hook in hooks:
        hook.remove()
    return sum(flops)


def _context_lengths(module: torch.nn.Module, run) -> list[int]:
    """Key/value counts seen by every MultiHeadAttention inside ``module`` during ``run()``."""
    lengths = []
    hooks = [m.register_forward_hook(lambda _m, args, _out: lengths.append(args[1].shape[1]))
             for m in module.modules() if type(m).__name__ == "MultiHeadAttention"]
    run()
    for hook in hooks:
        hook.remove()
    return lengths


def test_self_attention_mixes_distant_positions():
    """Unlike the 1x1 convolution the original called self-attention, a far-away change reaches pixel (0, 0)."""
    attention = PooledSelfAttention(dim=16, num_heads=4, pool_size=4).eval()
    x = torch.randn(1, 16, 16, 16)
    far = x.clone()
    far[..., 12:, 12:] += 3 * torch.randn(16, 4, 4)  # not a constant: LayerNorm would remove that
    with torch.no_grad():
        change = (attention(x) - attention(far))[..., 0, 0].abs().max()
    assert change > 1e-3


def test_self_attention_keys_and_values_are_pooled():
    attention = PooledSelfAttention(dim=16, num_heads=4, pool_size=4)
    for size in (8, 32, 64):
        assert _context_lengths(attention, lambda: attention(torch.randn(1, 16, size, size))) == [16]
    assert _context_lengths(attention, lambda: attention(torch.randn(1, 16, 3, 2))) == [6]  # small maps unpooled


def test_cross_scale_attention_connects_the_scales():
    attention = CrossScaleAttention(dim=32, num_heads=4, num_scales=4, pool_size=4).eval()
    features = _pyramid(64)
    changed = [f.clone() for f in features]
    changed[3] += torch.randn_like(changed[3])  # only the stride-32 map
    with torch.no_grad():
        fine_before, fine_after = attention(features)[0], attention(changed)[0]
    assert (fine_before - fine_after).abs().max() > 1e-3  # the stride-4 map saw it


def test_cross_scale_keys_values_bounded_and_memory_linear_in_image_area():
    attention = CrossScaleAttention(dim=32, num_heads=4, num_scales=4, pool_size=4).eval()
    unpooled = CrossScaleAttention(dim=32, num_heads=4, num_scales=4, pool_size=10**6).eval()  # the original design
    small, large = _pyramid(128), _pyramid(256)
    with torch.no_grad():
        assert set(_context_lengths(attention, lambda: attention(small))) == {attention.max_context_tokens}
        assert set(_context_lengths(attention, lambda: attention(large))) == {attention.max_context_tokens} == {48}
        memory = [peak_memory(lambda: attention(f)) for f in (small, large)]
        work = [_attention_flops(attention, lambda: attention(f)) for f in (small, large)]
        unpooled_work = [_attention_flops(unpooled, lambda: unpooled(f)) for f in (small, large)]
    # 4x the pixels: measured activation memory grows ~4x (linear), not 16x (quadratic)
    assert 3.0 < memory[1] / memory[0] < 4.5, memory
    # the attention work itself: linear in the image area when pooled, quadratic (16x) in the original design
    assert work[1] / work[0] == 4.0 and unpooled_work[1] / unpooled_work[0] == 16.0
    # the flop counter (projections + attention) sees that work, whatever the torch version's SDPA kernel
    flops = [count_flops(attention, f) for f in (small, large)]
    unpooled_flops = [count_flops(unpooled, f) for f in (small, large)]
    assert all(f > w for f, w in zip(flops + unpooled_flops, work + unpooled_work))
    assert unpooled_flops[1] - unpooled_flops[0] > unpooled_work[1] - unpooled_work[0]
    assert flops[1] / flops[0] < 4.5 < 10 < unpooled_flops[1] / unpooled_flops[0]


def test_attention_switches_select_the_modules():
    def build(modern, cross):
        return MultiScaleAttention(32, num_scales=4, modern=modern, cross_scale=cross, num_heads=4, pool_size=4)

    assert all(isinstance(m, CbamModule) for m in build(False, False).per_scale)
    assert all(isinstance(m, PooledSelfAttention) for m in build(True, False).per_scale)
    assert build(True, False).cross_scale is None and isinstance(build(False, True).cross_scale, CrossScaleAttention)


def test_dynamic_fusion_uses_per_image_softmax_weights():
    fusion = DynamicFeatureFusion([32] * 4, out_channels=16)
    features = [torch.cat([f, 3 * f]) for f in _pyramid(64)]  # two different images
    weights = fusion.scale_weights(features)
    assert weights.shape == (2, 4)
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    assert not torch.allclose(weights[0], weights[1])
    fused = fusion(features)
    assert fused.shape == (2, 16, 16, 16)
    fused.sum().backward()
    assert fusion.weight_logits.weight.grad.abs().sum() > 0


def test_dynamic_fusion_is_the_weighted_sum_of_projected_scales():
    fusion = DynamicFeatureFusion([8] * 4, out_channels=4).eval()
    features = _pyramid(32, dim=8)
    weights = fusion.scale_weights(features)
    expected = sum(
        weights[0, i] * torch.nn.functional.interpolate(project(f), size=(8, 8), mode="bilinear")
        for i, (f, project) in enumerate(zip(features, fusion.projections))
    )
    torch.testing.assert_close(fusion(features), expected)
