"""Our ConvNeXt V1/V2 compute exactly what timm computes, for every size timm has; pretrained loading.

A timm model with random weights, including the parameters timm's initialisation leaves trivial
(LayerScale at 1e-6, GRN at zero, LayerNorms at 1/0, zero biases) so that a wrong block, norm or
GRN cannot hide. Its state dict goes through the documented key mapping
into our model (built on the meta device and given the same tensors, to keep memory and time low
for the 200M-660M-parameter sizes) and both forward the same input.
"""

import pytest
import timm
import torch
from safetensors.torch import save_file

from convnext_v2.ConvNeXtModelV2 import convnext_tiny as doc_convnext_tiny
from convnext_v2.ConvNeXtModelV1 import convnext_tiny
from convnext_v2.ConvNeXtModelV2 import convnextv2_atto, convnextv2_tiny
from convnext_v2.model import MODELS, create_model, model_family
from convnext_v2 import pretrained
from convnext_v2.pretrained import timm_to_official

def randomized_timm_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A timm model with random weights.

    Conv and linear weights are N(0, 0.02), timm's own initialisation (drawn with ``normal_``, which
    is twice as fast as its truncated normal: this suite fills 1.7 billion parameters). LayerScale,
    GRN, LayerNorm and bias values are random too, unlike in timm's initialisation.
    """
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    model = model.to_empty(device="cpu").eval()
    assert not list(model.buffers())  # to_empty leaves buffers uninitialised; ConvNeXt has none
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in model.named_parameters():
            param.normal_(generator=generator)
            if key.endswith("gamma"):  # V1 LayerScale: O(1) instead of 1e-6
                param.abs_().add_(0.5)
            elif "grn" in key or key.endswith("bias"):
                param.mul_(0.2)
            elif "norm" in key:  # LayerNorm weights
                param.mul_(0.2).add_(1.0)
            else:
                param.mul_(0.02)
    return model


def ours_sharing_weights(name: str, timm_model: torch.nn.Module) -> torch.nn.Module:
    with torch.device("meta"):
        model = create_model(name)
    model.load_state_dict(timm_to_official(timm_model.state_dict()), strict=True, assign=True)
    return model.eval()


def test_every_model_exists_in_timm():
    assert set(MODELS) <= set(timm.list_models("convnext*"))


@pytest.mark.parametrize("name", list(MODELS))
def test_matches_timm(name):
    reference = randomized_timm_model(name)
    ours = ours_sharing_weights(name, reference)
    # 32x32 keeps the 660M-parameter sizes fast: feature maps of 8x8, 4x4, 2x2 and 1x1 per stage.
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, actual = reference(x), ours(x)
    assert actual.shape == (1, 1000)
    assert expected.abs().max() > 0.05  # a meaningful, non-degenerate output
    assert (actual - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["convnext_tiny", "convnextv2_atto", "convnextv2_tiny"])
def test_parameter_count_matches_timm(name):
    with torch.device("meta"):
        ours = create_model(name)
        reference = timm.create_model(name)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


def test_parameter_counts_quoted_by_the_source_document():
    # "Tiny: 28M, Base: 89M, Large: 198M" (ConvNeXt V2, 1000 classes)
    with torch.device("meta"):
        counts = {size: sum(p.numel() for p in create_model(f"convnextv2_{size}").parameters()) / 1e6
                  for size in ("tiny", "base", "large")}
    assert 28 <= counts["tiny"] < 29  # 28.6M
    assert round(counts["base"]) == 89
    assert round(counts["large"]) == 198


def test_family_and_document_alias():
    assert model_family("convnext_large") == "v1"
    assert model_family("convnextv2_huge") == "v2"
    assert doc_convnext_tiny is convnextv2_tiny  # `from ConvNeXtModelV2 import convnext_tiny`
    with pytest.raises(ValueError, match="unknown model 'convnext_giant'.*convnextv2_atto"):
        create_model("convnext_giant")


# ----------------------------------------------------------------------------- pretrained=...
@pytest.fixture(scope="module")
def atto_reference():
    return randomized_timm_model("convnextv2_atto", seed=5)


@pytest.fixture(scope="module")
def image():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_pretrained_timm_safetensors_file(tmp_path, atto_reference, image):
    path = tmp_path / "atto.safetensors"
    save_file(atto_reference.state_dict(), str(path))
    model = convnextv2_atto(pretrained=path).eval()
    with torch.no_grad():
        assert (model(image) - atto_reference(image)).abs().max().item() < 1e-4


def test_pretrained_official_checkpoint_file(tmp_path, atto_reference, image):
    # Official checkpoints are {"model": state dict with the official names}.
    path = tmp_path / "convnextv2_atto_1k_224_ema.pt"
    torch.save({"model": timm_to_official(atto_reference.state_dict())}, path)
    model = convnextv2_atto(pretrained=str(path)).eval()
    with torch.no_grad():
        assert (model(image) - atto_reference(image)).abs().max().item() < 1e-4


def test_pretrained_with_new_class_count_keeps_backbone_and_fresh_head(tmp_path, atto_reference, image):
    path = tmp_path / "atto.pth"
    torch.save({"state_dict": atto_reference.state_dict()}, path)
    model = convnextv2_atto(pretrained=path, num_classes=5).eval()
    assert model.head.weight.shape == (5, 320)
    assert model.head.bias.abs().max() == 0  # freshly initialised
    with torch.no_grad():
        expected = atto_reference.forward_head(atto_reference.forward_features(image), pre_logits=True)
        assert (model.forward_features(image) - expected).abs().max().item() < 1e-4


def test_pretrained_true_downloads_the_in1k_timm_weights(monkeypatch, atto_reference, image):
    requested = []

    def fake_download(hub_name):
        requested.append(hub_name)
        return atto_reference.state_dict()

    monkeypatch.setattr(pretrained, "download_timm_state_dict", fake_download)
    model = create_model("convnextv2_atto", pretrained=True).eval()
    assert requested == ["convnextv2_atto.fcmae_ft_in1k"]
    with torch.no_grad():
        assert (model(image) - atto_reference(image)).abs().max().item() < 1e-4


def test_pretrained_errors_say_what_is_wrong(tmp_path, atto_reference):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convnextv2_atto(pretrained=tmp_path / "missing.pth")
    path = tmp_path / "atto.pth"
    torch.save(atto_reference.state_dict(), path)
    with pytest.raises((ValueError, RuntimeError), match="size mismatch|do not fit"):
        convnext_tiny(pretrained=path)  # V2 atto weights into a V1 tiny
