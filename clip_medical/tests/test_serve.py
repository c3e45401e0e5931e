"""python -m shared.serve on a zero-shot export: the class texts are editable (JSON field and page) and the
probabilities follow them, equal to predict.py's with the same texts."""
import json

import pytest
import torch

from clip_medical.export import export_zero_shot
from clip_medical.models import CLIPModel, build_image_encoder, load_text_encoder, tokenize
from clip_medical.predict import main as predict_main
from shared.inference import Predictor
from shared.serve import ServeConfig, create_app
from shared.testing import headless_chromium, post_files, serving

NEW_TEXTS = {"正常": "正常胸部", "异常": "显示病变的胸部", "肺炎": "肺炎"}


@pytest.fixture(scope="module")
def clip_export(tmp_path_factory, text_encoder_dir, class_texts):
    torch.manual_seed(0)
    text_model, tokenizer = load_text_encoder(str(text_encoder_dir))
    model = CLIPModel(build_image_encoder("resnet18", pretrained=False, img_size=32), text_model, 16).eval()
    names, texts = list(class_texts), list(class_texts.values())
    return export_zero_shot(model, tokenizer, tokenize(tokenizer, texts), tmp_path_factory.mktemp("clip") / "export",
                            image_encoder="resnet18", img_size=32, class_names=names, class_texts=texts)


@pytest.fixture(scope="module")
def server(clip_export):
    with serving(create_app(Predictor(clip_export), ServeConfig(model=str(clip_export)))) as url:
        yield url


def predicted(export, image, texts=None):
    """predict.py's probabilities of one image, {class: probability}, with the trained or the given texts."""
    argv = ["--export", str(export), "--images", str(image)]
    for name, text in (texts or {}).items():
        argv += [f"--class-text.{name}", text]
    row = predict_main(argv).iloc[0]
    return {c.removeprefix("prob_"): float(row[c]) for c in row.index if c.startswith("prob_")}


def served(url, image, texts=None):
    data = {"heatmap": "false"} | ({"class_texts": json.dumps(texts, ensure_ascii=False)} if texts else {})
    return post_files(url, [(image.name, image.read_bytes())], **data)


def test_the_probabilities_follow_the_class_texts_as_predict_does(server, clip_export, data_dir):
    image = data_dir / "肺炎" / "000.png"
    for texts in (None, NEW_TEXTS):
        status, body = served(server, image, texts)
        ours, theirs = body["results"][0]["probabilities"], predicted(clip_export, image, texts)
        assert status == 200 and list(ours) == list(theirs)
        assert max(abs(ours[c] - theirs[c]) for c in theirs) < 1e-6
        assert body["results"][0]["positive"] == [max(ours, key=ours.get)]
    swapped = dict(zip(NEW_TEXTS, reversed(NEW_TEXTS.values())))  # each name now carries another class's text
    ours = served(server, image, swapped)[1]["results"][0]["probabilities"]
    before = served(server, image, NEW_TEXTS)[1]["results"][0]["probabilities"]
    assert [ours[c] for c in swapped] == pytest.approx([before[c] for c in reversed(list(NEW_TEXTS))], abs=1e-6)


def test_a_heatmap_for_other_texts_leaves_the_model_as_it_was(server, clip_export, data_dir):
    image = data_dir / "正常" / "000.png"
    for texts in (NEW_TEXTS, None):  # Grad-CAM on the re-bound model once left the CLIP model in training mode
        status, body = post_files(server, [(image.name, image.read_bytes())],
                                  class_texts=json.dumps(texts or {}, ensure_ascii=False))
        result = body["results"][0]
        assert status == 200 and result["heatmap_class"] == max(result["probabilities"],
                                                                               key=result["probabilities"].get)
    assert result["probabilities"] == pytest.approx(predicted(clip_export, image), abs=1e-6)


@pytest.mark.parametrize("texts, message", [
    ({"正常": "正常胸部"}, "zero-shot classification needs at least two classes, each with a name and a text"),
    ({"正常": "正常胸部", "肺炎": ""}, "zero-shot classification needs at least two classes, each with a name and a text"),
])
def test_unusable_class_texts_are_one_message(server, data_dir, texts, message):
    status, body = served(server, data_dir / "正常" / "000.png", texts)
    assert status == 422 and body == {"error": message}


def test_the_page_edits_the_class_texts_in_chromium(clip_export, data_dir, tmp_path, class_texts):
    image = data_dir / "肺炎" / "000.png"
    with serving(create_app(Predictor(clip_export), ServeConfig(model=str(clip_export)))) as url, \
            headless_chromium(tmp_path / "profile") as driver:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def table_after(action):
            """Run ``action``, wait for the new result, return the page's {class: probability}."""
            before = driver.find_element(By.ID, "results").get_attribute("data-done")
            action()
            WebDriverWait(driver, 60).until(
                lambda d: d.find_element(By.ID, "results").get_attribute("data-done") not in (None, before))
            rows = driver.find_elements(By.CSS_SELECTOR, "#results tbody tr")
            return {r.get_attribute("data-class"): float(r.get_attribute("data-probability")) for r in rows}

        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        inputs = driver.find_elements(By.CSS_SELECTOR, "#texts .class-text")
        assert [i.get_attribute("value") for i in inputs] == list(class_texts.values())
        trained = table_after(lambda: driver.find_element(By.ID, "files").send_keys(str(image)))
        expected = predicted(clip_export, image)
        assert max(abs(trained[c] - expected[c]) for c in expected) < 1e-6 and len(trained) == 2

        def edit_texts():
            driver.find_element(By.ID, "add-class").click()
            for row, (name, text) in zip(driver.find_elements(By.CSS_SELECTOR, "#texts tbody tr"), NEW_TEXTS.items()):
                for selector, value in ((".class-name", name), (".class-text", text)):
                    field = row.find_element(By.CSS_SELECTOR, selector)
                    field.clear()
                    field.send_keys(value)
            driver.find_element(By.ID, "apply-texts").click()

        edited = table_after(edit_texts)
        expected = predicted(clip_export, image, NEW_TEXTS)
        assert set(edited) == set(NEW_TEXTS) and max(abs(edited[c] - expected[c]) for c in expected) < 1e-6
        back = table_after(lambda: driver.find_element(By.ID, "reset-texts").click())
        assert back == trained
