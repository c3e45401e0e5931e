"""python -m shared.serve on a ConvNeXt V2 export: the served probabilities equal predict_flowers.py's for the
same image files, and several files in one request come back as one result each, in the order sent."""
import base64
import io

import pytest
import torch
from PIL import Image

from convnext_v2.ConvNeXtModelV2 import ConvNeXtV2
from convnext_v2.model import architecture
from convnext_v2.predict_flowers import eval_transform, load_classifier, predict
from shared import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, export_model, load_image
from shared.inference import Predictor
from shared.serve import ServeConfig, create_app
from shared.testing import post_files, serving

TINY = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def flowers_export(tmp_path_factory, colour_folders, colour_names):
    """A tiny random-weight 3-class ConvNeXt V2 export (as train.py writes it) and one image per colour, as
    (upload name, path)."""
    root = tmp_path_factory.mktemp("serve_convnext_v2")
    torch.manual_seed(0)
    model = ConvNeXtV2(num_classes=len(colour_names), **TINY).eval()
    export_model(model, root / "export", project="convnext_v2", architecture=architecture(model),
                 class_names=colour_names, task="multi-class",
                 preprocessing=Preprocessing(size=(IMAGE_SIZE, IMAGE_SIZE), channels=3, mean=IMAGENET_MEAN,
                                             std=IMAGENET_STD, spatial_dims=2))
    images = [(f"{colour}_3.png", colour_folders / colour / "3.png") for colour in colour_names]
    return root / "export", images


@pytest.fixture(scope="module")
def expected(flowers_export, colour_names):
    """predict_flowers.py's probabilities of every image (all classes): {upload name: {class: probability}}."""
    export, images = flowers_export
    model, info = load_classifier(export, torch.device("cpu"), "v2")
    transform = eval_transform(info)
    return {name: dict(predict(model, load_image(path), transform, info["class_names"], top_k=len(colour_names)))
            for name, path in images}


@pytest.fixture(scope="module")
def server(flowers_export):
    export = flowers_export[0]
    with serving(create_app(Predictor(export), ServeConfig(model=str(export)))) as url:
        yield url



def test_served_probabilities_equal_predict_flowers(server, flowers_export, expected, colour_names):
    for name, path in flowers_export[1]:
        status, body = post_files(server, [(name, path.read_bytes())])
        assert status == 200 and body["task"] == "multi-class" and body["thresholds"] is None
        (result,) = body["results"]
        ours, truth = result["probabilities"], expected[name]
        assert list(ours) == colour_names
        assert max(abs(ours[c] - truth[c]) for c in colour_names) < 1e-6
        assert result["positive"] == [max(truth, key=truth.get)] == [result["heatmap_class"]]
        heatmap = Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"])))
        assert heatmap.format == "PNG" and heatmap.width > 50


def test_two_images_in_one_request_give_two_results_in_order(server, flowers_export, expected, colour_names):
    (first, first_path), (second, second_path) = flowers_export[1][2], flowers_export[1][0]
    # the two images score differently, so a swap of the results would show
    assert max(abs(expected[first][c] - expected[second][c]) for c in colour_names) > 1e-4
    for files in ([(first, first_path), (second, second_path)], [(second, second_path), (first, first_path)]):
        status, body = post_files(server, [(name, path.read_bytes()) for name, path in files], heatmap="false")
        assert status == 200 and len(body["results"]) == 2
        assert [r["file"] for r in body["results"]] == [name for name, _ in files]
        for result, (name, _) in zip(body["results"], files):
            assert max(abs(result["probabilities"][c] - expected[name][c]) for c in colour_names) < 1e-6
            assert "heatmap_png" not in result
