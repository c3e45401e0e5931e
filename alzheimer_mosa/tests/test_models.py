"""Shapes, multi-scale features, weight loading and freezing of the 3D ResNets and both Mosa variants."""

import pytest
import torch

from alzheimer_mosa.mosa_net import Mosa
from alzheimer_mosa.mosa_net_simple import MosaShared
from alzheimer_mosa.resnet import RESNET_SPECS, build_resnet3d, load_pretrained_resnet
from shared import CheckpointError

DEPTHS = sorted(RESNET_SPECS)
SIZES = [(32, 32, 32), (48, 48, 48)]
TRANSFORMER = dict(embed_dim=32, depth=1, num_heads=4)


def build(variant: str, depth: str, size, num_classes: int = 3):
    model_cls = Mosa if variant == "mosa" else MosaShared
    return model_cls(build_resnet3d(depth, in_channels=1, num_classes=num_classes), size, num_classes, **TRANSFORMER)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}cube")
@pytest.mark.parametrize("depth", DEPTHS)
def test_every_depth_and_variant_gives_logits(depth, size):
    """The plain ResNet, Mosa and MosaShared on one backbone instance (built once: 3D inits are slow)."""
    backbone = build_resnet3d(depth, in_channels=1, num_classes=3).eval()
    x = torch.randn(2, 1, *size)  # batch 2: PyTorch's CPU conv3d takes a slow path for batch 1
    with torch.no_grad():
        logits = {"resnet": backbone(x)}  # first: Mosa replaces the ResNet's own head
        logits["mosa"] = Mosa(backbone, size, 3, **TRANSFORMER).eval()(x)
        logits["mosa_shared"] = MosaShared(backbone, size, 3, **TRANSFORMER).eval()(x)
    for name, value in logits.items():
        assert value.shape == (2, 3), name
        assert torch.isfinite(value).all(), name


@pytest.mark.parametrize("depth,last_channels", [("resnet18_3d", 512), ("resnet50_3d", 2048)])
def test_feature_maps_match_declared_channels_and_sizes(depth, last_channels):
    model = build_resnet3d(depth).eval()
    size = (40, 33, 24)  # anisotropic and odd: sizes must follow ceil(n / 2) per stride-2 layer
    with torch.no_grad():
        maps = model.get_feature_maps(torch.randn(1, 1, *size))
    assert [m.shape[1] for m in maps] == model.feature_channels
    assert model.feature_channels[-1] == last_channels
    assert [tuple(m.shape[2:]) for m in maps] == model.feature_map_sizes(size)
    assert model.feature_map_sizes(size)[1] == (10, 9, 6)


def test_width_scales_every_stage():
    model = build_resnet3d("resnet50_3d", width=16)
    assert model.feature_channels == [16, 64, 128, 256, 512]
    assert model(torch.randn(2, 1, 32, 32, 32)).shape == (2, 2)


def test_mosa_token_grids_derive_from_input_size():
    model = build("mosa", "resnet10_3d", (64, 64, 64))
    # stage strides 4, 8, 16, 32 with patches 4, 2, 1, 1 -> grids of 4^3, 4^3, 4^3, 2^3 tokens.
    assert [t.grid for t in model.tokenizers] == [(4, 4, 4)] * 3 + [(2, 2, 2)]
    assert [t.proj.in_channels for t in model.tokenizers] == [64, 128, 256, 512]


def test_positional_embeddings_adapt_to_another_input_size():
    model = build("mosa_shared", "resnet10_3d", (32, 32, 32)).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 1, 64, 48, 64))
    assert logits.shape == (1, 3)


@pytest.mark.parametrize("variant", ["mosa", "mosa_shared"])
def test_every_parameter_gets_a_gradient(variant):
    """No dead branch: DDP without find_unused_parameters needs every parameter in the graph."""
    model = build(variant, "resnet10_3d", (32, 32, 32)).train()
    model(torch.randn(2, 1, 32, 32, 32)).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_shared_variant_has_fewer_parameters():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build("mosa_shared", "resnet10_3d", SIZES[0])) < count(build("mosa", "resnet10_3d", SIZES[0]))


def test_frozen_backbone_gets_no_gradient_and_keeps_batchnorm_statistics():
    model = build("mosa", "resnet10_3d", (32, 32, 32))
    model.set_backbone_frozen(True)
    model.train()
    assert not model.backbone.training and model.encoders.training
    stats_before = model.backbone.bn1.running_mean.clone()
    model(torch.randn(2, 1, 32, 32, 32)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.encoders.parameters())
    assert torch.equal(model.backbone.bn1.running_mean, stats_before)
    model.set_backbone_frozen(False)
    assert model.backbone.training


def test_medicalnet_checkpoint_loads_through_key_map(tmp_path):
    source = build_resnet3d("resnet18_3d", num_classes=2)
    # MedicalNet layout: DataParallel "module." prefix, a segmentation head, no classifier.
    state = {f"module.{k}": v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    state["module.conv_seg.0.weight"] = torch.zeros(32, 512, 3, 3, 3)
    torch.save({"state_dict": state}, tmp_path / "resnet_18.pth")
    target = build_resnet3d("resnet18_3d", num_classes=5)
    missing, unexpected = load_pretrained_resnet(target, tmp_path / "resnet_18.pth")
    assert missing == [] and unexpected == []
    assert torch.equal(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert torch.equal(target.bn1.running_var, source.bn1.running_var)
    assert target.fc.out_features == 5  # the head of the pretraining task is not loaded


def test_mismatched_pretrained_weights_are_a_clear_error(tmp_path):
    torch.save({"state_dict": build_resnet3d("resnet10_3d", in_channels=2).state_dict()}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="conv1.weight.*in_channels"):
        load_pretrained_resnet(build_resnet3d("resnet10_3d", in_channels=1), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained_resnet(build_resnet3d("resnet10_3d"), tmp_path / "absent.pth")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_pretrained_resnet(build_resnet3d("resnet10_3d"), tmp_path / "notes.txt")


def test_mosa_checkpoint_seeds_a_resnet_through_the_backbone_prefix(tmp_path):
    mosa = Mosa(build_resnet3d("resnet10_3d", width=8), (32, 32, 32), 2, **TRANSFORMER)
    torch.save({"model": mosa.state_dict()}, tmp_path / "mosa.pth.tar")
    resnet = build_resnet3d("resnet10_3d", width=8)
    missing, unexpected = load_pretrained_resnet(resnet, tmp_path / "mosa.pth.tar")
    assert missing == []
    assert unexpected and all(not k.startswith("backbone.") for k in unexpected)  # tokenizers, encoders, head
    assert torch.equal(resnet.layer2[0].downsample[0].weight, mosa.backbone.layer2[0].downsample[0].weight)
