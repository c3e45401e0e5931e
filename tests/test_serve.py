"""python -m shared.serve: the page in a real headless Chromium and the JSON endpoint over HTTP, on a chest X-ray
export. The served probabilities must equal convnext_cxr/predict.py's for the same image."""
import base64
import io
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from PIL import Image

from convnext_cxr.model import ModelConfig, build_model, export_architecture
from convnext_cxr.predict import predict as cxr_predict
from shared import export_model, parse_cli
from shared.cxr14 import FINDINGS, cxr_preprocessing
from shared.cxr14_demo import make_synthetic_cxr
from shared.inference import Predictor
from shared.serve import ServeConfig, create_app
from shared.testing import (chromium_paths, free_port, headless_chromium, post_files, requested_urls, serving,
                            write_dicom)

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = np.linspace(0.3, 0.6, len(FINDINGS))
SCREENSHOT_LIMIT = 300_000  # bytes: the README's picture of the page


@pytest.fixture(scope="module")
def cxr_export(tmp_path_factory):
    """A tiny chest X-ray export (64 px, random weights, thresholds 0.3..0.6) and six synthetic X-rays."""
    root = tmp_path_factory.mktemp("serve_cxr")
    image_dir, _ = make_synthetic_cxr(root, num_images=6, size=64, seed=5)
    cfg = ModelConfig(backbone="convnext_atto", pretrained=False, embed_dim=32, num_heads=2, head_hidden_dim=16,
                      drop_path_rate=0.0)
    torch.manual_seed(0)
    export_model(build_model(cfg).eval(), root / "export", project="convnext_cxr",
                 architecture=export_architecture(cfg, len(FINDINGS)), class_names=list(FINDINGS), task="multi-label",
                 preprocessing=cxr_preprocessing(64), thresholds=THRESHOLDS)
    return root / "export", sorted(image_dir.glob("*.png"))


@pytest.fixture(scope="module")
def expected(cxr_export, tmp_path_factory):
    """convnext_cxr/predict.py's probabilities of every image: {file name: {finding: probability}}."""
    export, images = cxr_export
    found = cxr_predict(export, images, tmp_path_factory.mktemp("predict"))
    return {Path(path).name: probs for path, probs in found.items()}


@pytest.fixture(scope="module")
def server(cxr_export):
    """The export served in this process (real HTTP on 127.0.0.1); yields (base URL, app's upload folder)."""
    app = create_app(Predictor(cxr_export[0]), ServeConfig(model=str(cxr_export[0]), max_upload_mb=1, max_files=8))
    with serving(app) as url:
        yield url, app.app.state.upload_root



def test_the_json_endpoint_gives_predicts_probabilities_thresholds_and_a_heatmap(server, cxr_export, expected):
    url, _ = server
    image = cxr_export[1][0]
    status, body = post_files(url, [(image.name, image.read_bytes())])
    assert status == 200 and body["thresholds"] == pytest.approx(THRESHOLDS.tolist())
    (result,) = body["results"]
    ours = result["probabilities"]
    assert list(ours) == list(FINDINGS)
    assert max(abs(ours[f] - expected[image.name][f]) for f in FINDINGS) < 1e-6
    assert result["positive"] == [f for f, t in zip(FINDINGS, THRESHOLDS) if ours[f] >= t]
    assert 0 < len(result["positive"]) < len(FINDINGS)  # the check above tests both sides of the thresholds
    heatmap = Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"])))
    assert heatmap.format == "PNG" and heatmap.width > 1.5 * heatmap.height  # two panels: Grad-CAM, spatial attention
    assert result["heatmap_class"] == max(ours, key=ours.get)
    status, body = post_files(url, [(image.name, image.read_bytes())], heatmap="false", heatmap_class="Mass")
    assert "heatmap_png" not in body["results"][0]
    assert post_files(url, [(image.name, image.read_bytes())], heatmap_class="Mass")[1]["results"][0]["heatmap_class"] == "Mass"


def test_twenty_concurrent_requests_are_each_answered_with_their_own_image(server, cxr_export, expected):
    url, _ = server
    images = cxr_export[1]
    jobs = [(images[i % len(images)], "true" if i % 4 == 0 else "false") for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda job: post_files(url, [(job[0].name, job[0].read_bytes())], heatmap=job[1]), jobs))
    for (image, heatmap), (status, body) in zip(jobs, answers):
        assert status == 200
        (result,) = body["results"]
        assert result["file"] == image.name and ("heatmap_png" in result) == (heatmap == "true")
        assert max(abs(result["probabilities"][f] - expected[image.name][f]) for f in FINDINGS) < 1e-6


def test_a_dicom_of_the_same_pixels_scores_like_the_png(server, cxr_export, expected, tmp_path):
    url, _ = server
    image = cxr_export[1][1]
    pixels = np.asarray(Image.open(image).convert("L"), dtype=np.uint16)
    stretched = (pixels - pixels.min()) * 257  # 16-bit, full range: scales back to the PNG's 8 bits exactly
    files = [("a.dcm", write_dicom(tmp_path / "a.dcm", stretched).read_bytes()),
             ("b.dcm", write_dicom(tmp_path / "b.dcm", stretched.max() - stretched, "MONOCHROME1").read_bytes())]
    assert (pixels.min(), pixels.max()) == (0, 255)
    status, body = post_files(url, files, heatmap="false")
    assert status == 200
    for result in body["results"]:
        assert max(abs(result["probabilities"][f] - expected[image.name][f]) for f in FINDINGS) < 1e-6


def test_bad_uploads_get_one_clear_message_each(server, cxr_export, tmp_path):
    url, _ = server
    good = cxr_export[1][0]
    corrupt_dicom = bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f" + np.random.default_rng(0).bytes(200)
    volume = io.BytesIO()
    nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)).to_filename(tmp_path / "v.nii.gz")
    volume = (tmp_path / "v.nii.gz").read_bytes()
    series = write_dicom(tmp_path / "s.dcm", np.zeros((3, 16, 16))).read_bytes()
    status, body = post_files(url, [("notes.txt", b"not an image at all"), ("scan.dcm", corrupt_dicom),
                              ("brain.nii.gz", volume), ("series.dcm", series), (good.name, good.read_bytes())])
    assert status == 200  # one good file: the others are reported one by one
    errors = [r.get("error") for r in body["results"]]
    assert errors[0] == "notes.txt: not a file this page can read; send a PNG, JPEG, TIFF, DICOM or NIfTI file"
    assert errors[1].startswith("scan.dcm: cannot read this DICOM file (")
    assert errors[2] == ("brain.nii.gz: a NIfTI volume (3D); this convnext_cxr model takes 2D images "
                         "(PNG, JPEG, DICOM)")
    assert errors[3] == "series.dcm: a DICOM series of 3 frames; this model takes one 2D image per file"
    assert errors[4] is None and "Traceback" not in str(body)
    status, body = post_files(url, [("notes.txt", b"text")])
    assert status == 422 and body["error"].startswith("notes.txt: not a file")
    status, body = post_files(url, [])
    assert status == 422 and body["error"].startswith("no files in the request")
    status, body = post_files(url, [(good.name, good.read_bytes())] * 20)
    assert status == 422 and body["error"] == "20 files in one request; this server takes at most 8"
    status, body = post_files(url, [("big.png", bytes(int(1.5 * 2 ** 20)))])
    assert status == 413 and "larger than this server's limit of 1 MB" in body["error"]
    status, body = post_files(url, [(good.name, good.read_bytes())], class_texts='{"a": "b", "c": "d"}')
    assert status == 422 and body["error"] == "class texts apply to zero-shot (CLIP) models; this one is multi-label"


def test_a_streamed_upload_over_the_limit_is_refused_while_it_is_read(server):
    url, _ = server
    boundary = "x" * 16
    chunks = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n".encode()]
    chunks += [bytes(2 ** 16)] * 24 + [f"\r\n--{boundary}--\r\n".encode()]  # 1.5 MB, no Content-Length
    response = requests.post(f"{url}/api/predict", data=iter(chunks), timeout=60,
                             headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and "limit of 1 MB" in response.json()["error"]


def test_uploads_live_only_in_a_temporary_folder_that_is_removed(cxr_export, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = create_app(Predictor(cxr_export[0]), ServeConfig(model=str(cxr_export[0])))
    root = app.app.state.upload_root
    export_files = sorted(p.name for p in cxr_export[0].iterdir())
    with serving(app) as url:
        image = cxr_export[1][0]
        assert post_files(url, [(image.name, image.read_bytes())] * 3)[0] == 200
        assert root.is_dir() and not any(root.iterdir())  # each request's folder is gone when it is answered
    assert not root.exists()  # and the server's own folder at shutdown
    assert not any(tmp_path.iterdir()) and sorted(p.name for p in cxr_export[0].iterdir()) == export_files


def test_a_failure_inside_the_model_is_one_line_for_that_file_and_a_traceback_on_the_console(cxr_export, caplog):
    predictor = Predictor(cxr_export[0])
    images = cxr_export[1][:2]
    healthy, calls = predictor.predict, []

    def failing_on_the_second_file(inputs, *args, **kwargs):
        calls.append(inputs)
        if len(calls) == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return healthy(inputs, *args, **kwargs)

    predictor.predict = failing_on_the_second_file
    with serving(create_app(predictor, ServeConfig(model=str(cxr_export[0])))) as url:
        status, body = post_files(url, [(p.name, p.read_bytes()) for p in images], heatmap="false")
    assert status == 200 and "probabilities" in body["results"][0]
    assert body["results"][1] == {"file": images[1].name, "error": f"{images[1].name}: the model failed on this file "
                                  "(RuntimeError: CUDA error: an illegal memory access was encountered); the "
                                  "server's console has the details"}
    assert any(r.exc_info and r.name == "shared.serve" for r in caplog.records)


def test_the_command_binds_127_0_0_1_unless_told_otherwise():
    assert parse_cli(ServeConfig, ["--model", "x"]).host == "127.0.0.1"


def test_the_page_in_chromium_shows_predicts_probabilities_and_loads_nothing_from_elsewhere(
        cxr_export, expected, tmp_path):
    """The real command (python -m shared.serve) and Debian's Chromium: upload two X-rays and a DICOM, read the
    table, check the thresholds and highlights, take the README's screenshot, then send files it must refuse
    (a text file, a corrupt DICOM, a 3D volume) and read their messages on the page."""
    chromium_paths()  # skip (or fail in CI) before starting a server for a browser that is not there
    export, images = cxr_export
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "shared.serve", "--model", str(export), "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, server)
        with headless_chromium(tmp_path / "profile", height=1000) as driver:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            requested_urls(driver)  # forget the browser's own start page
            driver.get(url)
            WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
            pixels = np.asarray(Image.open(images[2]).convert("L"), dtype=np.uint16)
            dicom = write_dicom(tmp_path / "same_as_png.dcm", (pixels - pixels.min()) * 257)
            driver.find_element(By.ID, "files").send_keys("\n".join(map(str, [images[2], images[3], dicom])))
            WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "results").get_attribute("data-done"))
            cards = driver.find_elements(By.CSS_SELECTOR, "#results .result")
            assert [c.get_attribute("data-file") for c in cards] == [images[2].name, images[3].name, dicom.name]
            for card, truth in zip(cards, [images[2].name, images[3].name, images[2].name]):
                rows = card.find_elements(By.CSS_SELECTOR, "tbody tr")
                shown = {r.get_attribute("data-class"): float(r.get_attribute("data-probability")) for r in rows}
                assert max(abs(shown[f] - expected[truth][f]) for f in FINDINGS) < 1e-6
                for row in rows:
                    cells = row.find_elements(By.TAG_NAME, "td")
                    threshold = THRESHOLDS[FINDINGS.index(row.get_attribute("data-class"))]
                    assert cells[3].text == f"{threshold:.3f}"
                    positive = "positive" in row.get_attribute("class").split()
                    assert positive == (shown[row.get_attribute("data-class")] >= threshold)
                heatmap = card.find_element(By.CSS_SELECTOR, "img.heatmap")
                assert driver.execute_script("return arguments[0].naturalWidth", heatmap) > 0
            screenshot = tmp_path / "serve_page.png"
            driver.save_screenshot(str(screenshot))
            assert 0 < screenshot.stat().st_size < SCREENSHOT_LIMIT
            if os.environ.get("MEDCLS_SCREENSHOT"):  # how the README's picture is made
                shutil.copyfile(screenshot, os.environ["MEDCLS_SCREENSHOT"])

            (tmp_path / "notes.txt").write_text("not an image")
            file_input = driver.find_element(By.ID, "files")
            driver.execute_script("arguments[0].value = ''", file_input)  # a new choice, as a person makes it
            file_input.send_keys(str(tmp_path / "notes.txt"))
            WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "message").is_displayed())
            assert driver.find_element(By.ID, "message").text == (
                "notes.txt: not a file this page can read; send a PNG, JPEG, TIFF, DICOM or NIfTI file")
            corrupt = tmp_path / "scan.dcm"
            corrupt.write_bytes(bytes(128) + b"DICM" + np.random.default_rng(0).bytes(200))
            nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)).to_filename(tmp_path / "brain.nii.gz")
            driver.execute_script("arguments[0].value = ''", file_input)
            file_input.send_keys(f"{corrupt}\n{tmp_path / 'brain.nii.gz'}\n{images[0]}")
            WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 3)
            errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .result .error")]
            assert len(errors) == 2 and errors[0].startswith("scan.dcm: cannot read this DICOM file (")
            assert errors[1] == ("brain.nii.gz: a NIfTI volume (3D); this convnext_cxr model takes 2D images "
                                 "(PNG, JPEG, DICOM)")
            assert "Traceback" not in driver.page_source
            urls = requested_urls(driver)
            assert {u.split("?")[0] for u in urls} >= {f"{url}/{p}" for p in ("", "static/page.js", "static/page.css",
                                                                             "api/model", "api/predict")}
            # what reaches a network: http(s) and websockets; data: is inline, chrome*: the browser's own new-tab page
            network = [u for u in urls if u.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")]
            assert all(u.startswith(f"{url}/") for u in network), network
    finally:
        server.terminate()
        output = server.communicate(timeout=60)[0]
    assert f"at http://127.0.0.1:{port}/" in output and "Traceback" not in output
    assert not list(tmp_path.glob("medcls-serve-*"))  # the upload folder is removed at shutdown


def wait_until_serving(url: str, process: subprocess.Popen, limit_s: float = 180) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.communicate()[0]}")
        try:
            requests.get(f"{url}/api/model", timeout=5).raise_for_status()
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError(f"the server did not answer within {limit_s} s")
