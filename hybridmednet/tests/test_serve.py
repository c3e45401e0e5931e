"""python -m shared.serve on a hierarchical HybridMedNet export: the model returns (coarse, fine) logits; the
page serves the 14 findings' probabilities, which are the fine head's sigmoid (the export is multi-label, as
train.py writes it), with the exported thresholds, and a Grad-CAM heatmap of the fine head."""
import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from hybridmednet.configs.default_config import Config
from hybridmednet.models.backbones import BACKBONES, BackboneSpec, TimmFeatures
from hybridmednet.models.classifier import HierarchicalOutput
from hybridmednet.models.hybrid_med_net import HybridMedNet
from shared import config_from_dict, config_to_dict, export_model
from shared.cxr14 import FINDINGS, cxr_preprocessing
from shared.cxr14_demo import make_synthetic_cxr
from shared.inference import Predictor, image_reader
from shared.serve import ServeConfig, create_app
from shared.testing import post_files, serving

TINY_BACKBONE = "test_convnext"  # timm's 0.2M-parameter test ConvNeXt, as in conftest.py
IMAGE_SIZE = 32
THRESHOLDS = np.linspace(0.3, 0.7, len(FINDINGS))


@pytest.fixture(scope="module")
def hybrid_export(tmp_path_factory):
    """A tiny random-weight hierarchical export (as hybridmednet/train.py writes it), the rebuilt model, and
    three synthetic X-rays. timm's tiny test ConvNeXt stays registered while the module's tests run (the
    export is rebuilt by name)."""
    root = tmp_path_factory.mktemp("serve_hybridmednet")
    image_dir, _ = make_synthetic_cxr(root, num_images=3, size=64, seed=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(BACKBONES, TINY_BACKBONE, BackboneSpec(TimmFeatures, {"model_name": TINY_BACKBONE}))
        config = config_from_dict(Config, {
            "MODEL": {"backbone": TINY_BACKBONE, "pretrained": False, "fpn_channels": 32, "fusion_channels": 64,
                      "num_heads": 4, "attention_pool_size": 4, "dropout": 0.0, "hierarchical": True},
            "DATA": {"image_size": IMAGE_SIZE}})
        torch.manual_seed(0)
        model = HybridMedNet(config).eval()
        export_model(model, root / "export", project="hybridmednet", architecture=config_to_dict(config.MODEL),
                     class_names=FINDINGS, task="multi-label", preprocessing=cxr_preprocessing(IMAGE_SIZE),
                     thresholds=THRESHOLDS)
        yield root / "export", model, sorted(image_dir.glob("*.png"))


@pytest.fixture(scope="module")
def server(hybrid_export):
    export = hybrid_export[0]
    predictor = Predictor(export)
    with serving(create_app(predictor, ServeConfig(model=str(export)))) as url:
        yield url, predictor



def test_served_probabilities_are_the_fine_heads_and_a_heatmap_comes_back(server, hybrid_export):
    url, predictor = server
    _, model, images = hybrid_export
    assert predictor.info["task"] == "multi-label" and predictor.info["architecture"]["hierarchical"] is True
    read = image_reader(predictor.info["preprocessing"])
    for image in images:
        with torch.no_grad():
            output = model(read(image)[None])
        assert isinstance(output, HierarchicalOutput) and output.coarse.shape == (1, 3)
        expected = dict(zip(FINDINGS, torch.sigmoid(output.fine)[0].tolist()))
        status, body = post_files(url, [(image.name, image.read_bytes())])
        assert status == 200 and body["task"] == "multi-label"
        assert body["thresholds"] == pytest.approx(THRESHOLDS.tolist())
        (result,) = body["results"]
        ours = result["probabilities"]
        assert list(ours) == list(FINDINGS)
        assert max(abs(ours[f] - expected[f]) for f in FINDINGS) < 1e-6
        assert result["positive"] == [f for f, t in zip(FINDINGS, THRESHOLDS) if ours[f] >= t]
        assert 0 < len(result["positive"]) < len(FINDINGS)  # the check above tests both sides of the thresholds
        assert result["heatmap_class"] == max(expected, key=expected.get)
        heatmap = Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"])))
        assert heatmap.format == "PNG" and heatmap.width > 50 and heatmap.height > 50
    # the 14 fine probabilities are independent sigmoids, not a softmax over the findings
    assert sum(ours.values()) > 2


def test_a_heatmap_of_another_finding_and_none_on_request(server, hybrid_export):
    url, _ = server
    image = hybrid_export[2][0]
    status, body = post_files(url, [(image.name, image.read_bytes())], heatmap_class="Effusion")
    assert status == 200 and body["results"][0]["heatmap_class"] == "Effusion"
    assert Image.open(io.BytesIO(base64.b64decode(body["results"][0]["heatmap_png"]))).format == "PNG"
    status, body = post_files(url, [(image.name, image.read_bytes())], heatmap="false")
    assert status == 200 and "heatmap_png" not in body["results"][0]
    status, body = post_files(url, [(image.name, image.read_bytes())], heatmap_class="Lung group")
    assert status == 422 and body == {"error": f"heatmap_class 'Lung group' is not one of the classes {list(FINDINGS)}"}
