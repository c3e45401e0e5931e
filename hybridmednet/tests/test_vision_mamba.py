"""Vision Mamba is a real bidirectional selective state-space model, not a renamed ConvNeXt."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.models.convnext import ConvNeXtBlock
from timm.optim import create_optimizer_v2

from hybridmednet.models.backbones import build_backbone
from hybridmednet.models.hybrid_med_net import HybridMedNet
from hybridmednet.models.selective_scan import linear_recurrence, selective_scan, selective_scan_torch
from hybridmednet.models.vision_mamba import BidirectionalMamba, SelectiveSSM, VimBlock, VisionMambaFeatures


def sequential_selective_scan(u, delta, A, B, C, D, z, delta_bias):
    """Mamba's recurrence written out one time step at a time (the definition, in float64)."""
    delta = F.softplus(delta + delta_bias[:, None])
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, dim=-1) * F.silu(z)


def _scan_inputs(batch=2, channels=3, length=19, state=4):
    g = torch.Generator().manual_seed(0)
    return dict(
        u=torch.randn(batch, channels, length, generator=g, dtype=torch.float64),
        delta=torch.randn(batch, channels, length, generator=g, dtype=torch.float64),
        A=-torch.rand(channels, state, generator=g, dtype=torch.float64) * 3,
        B=torch.randn(batch, state, length, generator=g, dtype=torch.float64),
        C=torch.randn(batch, state, length, generator=g, dtype=torch.float64),
        D=torch.randn(channels, generator=g, dtype=torch.float64),
        z=torch.randn(batch, channels, length, generator=g, dtype=torch.float64),
        delta_bias=torch.randn(channels, generator=g, dtype=torch.float64),
    )


def test_parallel_scan_matches_the_sequential_recurrence():
    inputs = _scan_inputs()
    expected = sequential_selective_scan(**inputs)
    torch.testing.assert_close(selective_scan_torch(**inputs), expected)


def test_linear_recurrence_backward_is_exact():
    a = torch.rand(2, 3, 13, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 13, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_recurrence, (a, b))


def test_selective_scan_gradients_match_the_sequential_definition():
    inputs = {k: v.float().requires_grad_() for k, v in _scan_inputs().items()}
    selective_scan(**inputs).square().sum().backward()  # checkpointed plain-PyTorch path
    ours = {k: v.grad.clone() for k, v in inputs.items()}
    reference = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
    sequential_selective_scan(**reference).square().sum().backward()
    for name, grad in ours.items():
        torch.testing.assert_close(grad, reference[name].grad.float(), rtol=1e-4, atol=1e-4, msg=name)


def test_ssm_is_causal_and_the_mixer_sees_both_directions():
    torch.manual_seed(0)
    mixer = BidirectionalMamba(d_model=16, d_state=4)
    tokens = torch.randn(1, 10, 16, requires_grad=True)

    def influence_of_last_token_on_first(output: torch.Tensor) -> float:
        (grad,) = torch.autograd.grad(output[:, 0].sum(), tokens)
        return grad[:, -1].abs().sum().item()

    x, z = mixer.in_proj(tokens).transpose(1, 2).chunk(2, dim=1)
    forward_only = mixer.forward_ssm(x, z).transpose(1, 2)          # [B, L, D]
    assert influence_of_last_token_on_first(forward_only) == 0.0  # a forward scan cannot see the future
    assert influence_of_last_token_on_first(mixer(tokens)) > 0.0  # the backward scan carries it back


def test_selective_parameters_depend_on_the_input():
    """delta, B, C come from the tokens (the 'selective' in selective SSM), A is learned per channel."""
    ssm = SelectiveSSM(d_inner=8, d_state=4, dt_rank=2)
    assert ssm.x_proj.out_features == 2 + 2 * 4
    assert ssm.A_log.shape == (8, 4) and torch.allclose(ssm.A_log.exp()[0], torch.arange(1.0, 5.0))
    dt = torch.nn.functional.softplus(ssm.dt_proj.bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6  # Mamba's dt initialisation range


def test_vim_is_not_convnext(make_config):
    model = HybridMedNet(make_config("vim_tiny"))
    types = {type(m) for m in model.modules()}
    assert isinstance(model.backbone, VisionMambaFeatures)
    assert {BidirectionalMamba, SelectiveSSM, VimBlock} <= types
    assert ConvNeXtBlock not in types
    assert not any("convnext" in type(m).__module__.lower() for m in model.modules())
    assert len(model.backbone.blocks) == 24 and model.backbone.blocks[0].norm.normalized_shape == (192,)


def test_vim_pyramid_and_position_embedding_resampling():
    vim = build_backbone("vim_tiny", pretrained=False).eval()
    assert vim.feature_channels == [48, 96, 192, 192]
    for size in (64, 96):
        with torch.no_grad():
            features = vim(torch.randn(1, 3, size, size))
        assert [tuple(f.shape[-2:]) for f in features] == [(size // s, size // s) for s in (4, 8, 16)] + [
            (size // 32, size // 32)]


def test_vim_refuses_pretrained_instead_of_substituting():
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_backbone("vim_small", pretrained=True)


def test_state_space_parameters_and_head_biases_are_exempt_from_weight_decay(make_config):
    model = HybridMedNet(make_config("vim_tiny"))
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    no_decay = {id(p) for group in optimizer.param_groups if group["weight_decay"] == 0 for p in group["params"]}
    ssm = model.backbone.blocks[0].mixer.forward_ssm
    assert {id(ssm.A_log), id(ssm.D), id(model.backbone.pos_embed), id(model.classifier.heads.b1)} <= no_decay
    assert id(model.backbone.blocks[0].mixer.in_proj.weight) not in no_decay
