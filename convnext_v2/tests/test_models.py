"""Architecture details from the papers: initial identity of GRN and LayerScale, drop-path schedule,
head scaling, weight-decay exclusions, and the learning sample's agreement with the models."""

import pytest
import torch
from timm.layers import DropPath
from torch import nn

from convnext_v2.ConvNeXtModelV1 import Block as BlockV1
from convnext_v2.ConvNeXtModelV1 import ConvNeXt, LayerNorm2d
from convnext_v2.ConvNeXtModelV2 import GRN, ConvNeXtV2
from convnext_v2.ConvNeXtModelV2 import Block as BlockV2
from convnext_v2.LearningSample.ConvNeXtBlock import ConvNeXtBlock
from convnext_v2.model import create_model

TINY = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))


def test_grn_starts_as_identity_and_follows_the_paper():
    x = torch.randn(2, 5, 6, 12)  # (N, H, W, C)
    grn = GRN(12)
    assert torch.equal(grn(x), x)  # gamma = beta = 0

    # Channel 0 is all 1s, channel 1 all 3s over a 2x2 map: L2 norms 2 and 6, mean 4,
    # relative importance 0.5 and 1.5; with gamma = 1, beta = 0: x + x * N(x) = 1.5 and 7.5.
    x = torch.stack([torch.ones(2, 2), 3 * torch.ones(2, 2)], dim=-1)[None]  # (1, 2, 2, 2)
    grn = GRN(2)
    with torch.no_grad():
        grn.gamma.fill_(1.0)
        grn.beta.copy_(torch.tensor([0.25, -0.5]).view(1, 1, 1, 2))
    out = grn(x)
    assert torch.allclose(out[..., 0], torch.full((1, 2, 2), 1.5 + 0.25), atol=1e-5)
    assert torch.allclose(out[..., 1], torch.full((1, 2, 2), 7.5 - 0.5), atol=1e-5)


def test_layer_scale_makes_a_fresh_v1_block_nearly_the_identity():
    torch.manual_seed(0)
    block = BlockV1(16).eval()
    assert torch.equal(block.gamma, torch.full((16,), 1e-6))
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        fresh_change = (block(x) - x).abs().max().item()
        block.gamma.fill_(1.0)
        full_change = (block(x) - x).abs().max().item()
    assert fresh_change < 1e-5
    assert full_change > 1e5 * fresh_change  # the residual branch is scaled by exactly gamma


def test_v2_block_has_grn_and_no_layer_scale():
    block = BlockV2(16)
    assert not hasattr(block, "gamma")
    assert isinstance(block.grn, GRN) and block.grn.gamma.shape == (1, 1, 1, 64)
    with pytest.raises(TypeError):
        ConvNeXtV2(layer_scale_init_value=1e-6)


def test_layer_norm_2d_normalises_channels():
    x = torch.randn(2, 6, 4, 5) * 3 + 2
    y = LayerNorm2d(6, eps=1e-6)(x)
    assert torch.allclose(y.mean(dim=1), torch.zeros(2, 4, 5), atol=1e-5)
    assert torch.allclose(y.var(dim=1, unbiased=False), torch.ones(2, 4, 5), atol=1e-4)


def test_drop_path_rate_rises_linearly_over_all_blocks():
    model = ConvNeXt(drop_path_rate=0.4, **TINY)
    rates = [block.drop_path.drop_prob if isinstance(block.drop_path, DropPath) else 0.0
             for stage in model.stages for block in stage]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])  # 5 blocks


def test_initialisation_and_head_init_scale():
    torch.manual_seed(0)
    model = ConvNeXt(num_classes=1000, depths=(1, 1, 1, 1), dims=(64, 128, 256, 512))
    torch.manual_seed(0)
    scaled = ConvNeXt(num_classes=1000, depths=(1, 1, 1, 1), dims=(64, 128, 256, 512), head_init_scale=0.1)
    assert model.head.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.allclose(scaled.head.weight, 0.1 * model.head.weight)
    assert all(m.bias.abs().max() == 0 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize("model_cls", [ConvNeXt, ConvNeXtV2])
def test_forward_shapes_any_channels_and_classes(model_cls):
    model = model_cls(in_chans=1, num_classes=7, **TINY).eval()
    x = torch.randn(3, 1, 64, 48)  # non-square: stages see 16x12, 8x6, 4x3, 2x1
    with torch.no_grad():
        assert model.forward_features(x).shape == (3, 32)
        assert model(x).shape == (3, 7)


def test_drop_path_is_random_in_training_and_off_in_eval():
    model = ConvNeXtV2(num_classes=4, drop_path_rate=0.5, **TINY)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(0)
        first = model.train()(x)
        torch.manual_seed(1)
        second = model(x)
        model.eval()
        assert not torch.allclose(first, second)
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("model_cls", [ConvNeXt, ConvNeXtV2])
def test_no_weight_decay_lists_everything_but_conv_and_linear_weights(model_cls):
    model = model_cls(**TINY)
    skipped = model.no_weight_decay()
    decayed = {name for name, _ in model.named_parameters()} - skipped
    convs_and_linears = {"downsample_layers.0.0.weight", "head.weight"} | {
        f"downsample_layers.{i}.1.weight" for i in (1, 2, 3)
    } | {
        f"stages.{stage}.{block}.{layer}.weight"
        for stage, depth in enumerate(TINY["depths"])
        for block in range(depth)
        for layer in ("dwconv", "pwconv1", "pwconv2")
    }
    assert decayed == convs_and_linears
    assert {"norm.weight", "head.bias", "stages.0.0.norm.weight", "downsample_layers.0.1.weight"} <= skipped
    block_extra = {"stages.0.0.grn.gamma", "stages.0.0.grn.beta"} if model_cls is ConvNeXtV2 else {"stages.0.0.gamma"}
    assert block_extra <= skipped


def test_bad_stage_count_is_explained():
    with pytest.raises(ValueError, match="4 stages"):
        ConvNeXt(depths=(1, 1, 1), dims=(8, 16, 32))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_learning_block_matches_model_blocks(version):
    """The channels-first, 1x1-conv block of LearningSample computes what the models' blocks compute."""
    torch.manual_seed(0)
    dim = 8
    model_block = (BlockV1(dim) if version == "v1" else BlockV2(dim)).eval()
    with torch.no_grad():  # make every parameter non-trivial
        for p in model_block.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    learning = ConvNeXtBlock(dim, version=version).eval()
    with torch.no_grad():
        learning.depthwise.load_state_dict(model_block.dwconv.state_dict())
        learning.norm.load_state_dict(model_block.norm.state_dict())
        for conv, linear in ((learning.expand, model_block.pwconv1), (learning.project, model_block.pwconv2)):
            conv.weight.copy_(linear.weight[:, :, None, None])  # (O, I) -> (O, I, 1, 1)
            conv.bias.copy_(linear.bias)
        if version == "v1":
            learning.layer_scale.copy_(model_block.gamma.view(1, dim, 1, 1))
        else:
            learning.grn.gamma.copy_(model_block.grn.gamma.view(1, -1, 1, 1))
            learning.grn.beta.copy_(model_block.grn.beta.view(1, -1, 1, 1))
        x = torch.randn(2, dim, 9, 9)
        assert (learning(x) - model_block(x)).abs().max().item() < 1e-5


def test_learning_block_traces_every_step(capsys):
    ConvNeXtBlock(8, version="v2")(torch.randn(1, 8, 14, 14), trace=True)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("(")[0].strip() for line in lines] == [
        "input", "7x7 depthwise conv", "LayerNorm", "1x1 conv to 4C + GELU", "GRN", "1x1 conv back to C", "+ residual"
    ]
    assert lines[3].endswith("(1, 32, 14, 14)") and lines[-1].endswith("(1, 8, 14, 14)")


def test_named_constructor_passes_options():
    model = create_model("convnextv2_atto", num_classes=3, drop_path_rate=0.2, in_chans=1)
    assert model.head.out_features == 3 and model.downsample_layers[0][0].in_channels == 1
    assert model.stages[-1][-1].drop_path.drop_prob == pytest.approx(0.2)
