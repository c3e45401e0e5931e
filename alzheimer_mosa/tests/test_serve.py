"""python -m shared.serve on a 3D Mosa export: a served .nii.gz volume gets the probabilities the project's own
test dataset gives it, a heatmap of three orthogonal slices, and 2D or damaged files get one clear message."""
import base64
import gzip
import io
from pathlib import Path

import pytest
from PIL import Image

from shared.inference import Predictor
from shared.serve import ServeConfig, create_app
from shared.testing import post_files, serving


@pytest.fixture(scope="module")
def mosa_export(config_factory, demo_root, tmp_path_factory, export_tiny_mosa):
    """A tiny random-weight Mosa export, the test-split volumes as (upload name, path), and the model's softmax of
    each on the project's test dataset: {upload name: {class: probability}}. Both class folders hold a
    demo_test_000.nii.gz, so the upload name is <class>_<file>."""
    root = tmp_path_factory.mktemp("serve_mosa")
    cfg = config_factory(root, demo_root)
    test_set, probs = export_tiny_mosa(cfg, root / "export")
    volumes = [(f"{Path(s).parent.name}_{Path(s).name}", Path(s)) for s in test_set.sample_ids]
    expected = {name: dict(zip(cfg.data.class_names, map(float, p))) for (name, _), p in zip(volumes, probs)}
    return root / "export", volumes, expected


@pytest.fixture(scope="module")
def server(mosa_export):
    export = mosa_export[0]
    with serving(create_app(Predictor(export), ServeConfig(model=str(export), max_files=8))) as url:
        yield url



def test_served_volumes_get_the_test_datasets_probabilities(server, mosa_export):
    _, volumes, expected = mosa_export
    assert len(expected) == 4 and all(path.name.endswith(".nii.gz") for _, path in volumes)
    status, body = post_files(server, [(name, path.read_bytes()) for name, path in volumes], heatmap="false")
    assert status == 200 and body["task"] == "multi-class" and body["thresholds"] is None
    assert [r["file"] for r in body["results"]] == [name for name, _ in volumes]
    for result in body["results"]:
        ours, truth = result["probabilities"], expected[result["file"]]
        assert list(ours) == ["CN", "AD"]
        assert max(abs(ours[c] - truth[c]) for c in truth) < 1e-5
        assert sum(ours.values()) == pytest.approx(1.0, abs=1e-6)
        assert result["positive"] == [max(truth, key=truth.get)]
        assert "heatmap_png" not in result


def test_the_heatmap_is_three_slices_through_the_volume(server, mosa_export):
    _, volumes, expected = mosa_export
    name, volume = volumes[-1]
    status, body = post_files(server, [(name, volume.read_bytes())])
    assert status == 200
    (result,) = body["results"]
    assert max(abs(result["probabilities"][c] - p) for c, p in expected[name].items()) < 1e-5
    assert result["heatmap_class"] == max(expected[name], key=expected[name].get)
    heatmap = Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"])))
    assert heatmap.format == "PNG" and heatmap.width > 2.5 * heatmap.height  # sagittal, coronal, axial
    status, body = post_files(server, [(name, volume.read_bytes())], heatmap_class="CN")
    assert status == 200 and body["results"][0]["heatmap_class"] == "CN"


def test_a_2d_image_and_a_truncated_volume_are_refused_with_one_clear_message(server, mosa_export):
    name, volume = mosa_export[1][0]
    png = io.BytesIO()
    Image.new("L", (16, 16), 128).save(png, format="PNG")
    status, body = post_files(server, [("slice.png", png.getvalue())])
    assert status == 422
    assert body["error"] == "slice.png: a 2D image; this alzheimer_mosa model takes 3D NIfTI volumes (.nii, .nii.gz)"
    assert body["results"] == [{"file": "slice.png", "error": body["error"]}]

    data = volume.read_bytes()
    status, body = post_files(server, [("half.nii.gz", data[:len(data) // 2])])
    assert status == 422
    assert body["error"].startswith("half.nii.gz: cannot read this NIfTI volume (")
    assert "\n" not in body["error"] and "Traceback" not in str(body)

    status, body = post_files(server, [("slice.png", png.getvalue()), (name, data)], heatmap="false")
    assert status == 200  # one good file: the other is reported on its own
    assert body["results"][0]["error"].startswith("slice.png: a 2D image;") and "probabilities" in body["results"][1]


def test_a_damaged_volumes_message_names_no_server_path_and_is_one_line(server, mosa_export):
    _, volume = mosa_export[1][0]
    data = volume.read_bytes()
    raw = gzip.decompress(data)
    status, body = post_files(server, [("half.nii.gz", data[:len(data) // 2]), ("half.nii", raw[:len(raw) // 2])])
    assert status == 422 and [r["file"] for r in body["results"]] == ["half.nii.gz", "half.nii"]
    for result in body["results"]:
        assert result["error"].startswith(f"{result['file']}: cannot read this NIfTI volume (")
        assert "medcls-serve-" not in result["error"] and "upload0" not in result["error"]
        assert "\n" not in result["error"]
