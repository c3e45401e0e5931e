import logging
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from shared import load_export
from clip_medical.export import ZeroShotClassifier, export_zero_shot
from clip_medical.models import (IMAGE_ENCODERS, CLIPModel, StarNetDualPyramidRCF, build_image_encoder,
                                 create_timm_backbone, load_text_encoder, tokenize)
from clip_medical.models.starnet_dual_pyramid_rcf import PooledKVAttention
from clip_medical.task import ZeroShotCLIPTask

EMBED_DIM = 16


@pytest.fixture(scope="module")
def text_tower(text_encoder_dir):
    return load_text_encoder(str(text_encoder_dir))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", list(IMAGE_ENCODERS))
def test_every_encoder_name_gives_unit_norm_embeddings(name, text_tower):
    text_model, tokenizer = text_tower
    model = CLIPModel(build_image_encoder(name, pretrained=False, img_size=32), text_model, embed_dim=EMBED_DIM).eval()
    with torch.no_grad():
        image_emb, text_emb, logit_scale = model(torch.randn(3, 3, 32, 32), **tokenize(tokenizer, ["正常", "肺炎病变"]))
    assert image_emb.shape == (3, EMBED_DIM) and text_emb.shape == (2, EMBED_DIM)
    torch.testing.assert_close(image_emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_emb.norm(dim=-1), torch.ones(2))
    assert logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_hyphenated_names_map_to_timm_architectures():
    assert IMAGE_ENCODERS["efficientnet-b3"].timm_name == "efficientnet_b3"
    assert IMAGE_ENCODERS["convnext-large"].timm_name == "convnext_large"
    assert IMAGE_ENCODERS["vit"].takes_img_size
    with pytest.raises(ValueError, match="Unknown image encoder 'resnet19'.*resnet18"):
        build_image_encoder("resnet19", pretrained=False)


def test_pretrained_weights_fall_back_to_random_init_when_unavailable(monkeypatch, caplog):
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("hub unreachable")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with caplog.at_level(logging.WARNING):
        model = create_timm_backbone("resnet18", pretrained=True)
    assert model.num_features == 512
    assert "Pretrained weights for resnet18 are unavailable" in caplog.text


def test_starnet_dual_pyramid_parameter_count_matches_docstring():
    model = StarNetDualPyramidRCF()
    local = n_params(model.stem) + n_params(model.local_stages) + n_params(model.norm)
    assert n_params(model) == 3_545_424
    assert local == 2_676_168 == n_params(timm.create_model("starnet_s1", num_classes=0))
    assert model.num_features == 192


def test_starnet_dual_pyramid_is_exactly_starnet_s1_at_init():
    """gamma starts at 0, so the cascaded fusion leaves the StarNet-S1 local path unchanged."""
    torch.manual_seed(0)
    reference = timm.create_model("starnet_s1", num_classes=0).eval()
    model = StarNetDualPyramidRCF(local_pyramid=reference).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images))
        for fusion in model.fusions:
            fusion.gamma.fill_(1.0)
        assert not torch.allclose(model(images), reference(images))


def test_starnet_fusion_gates_learn_and_global_path_joins_once_gamma_moves():
    model = StarNetDualPyramidRCF()
    model(torch.randn(2, 3, 64, 64)).pow(2).sum().backward()
    assert all(fusion.gamma.grad.abs().sum() > 0 for fusion in model.fusions)
    # gamma = 0 blocks the global path's gradient at the first step, as intended (zero-init residual)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.global_stages.parameters())
    model.zero_grad()
    with torch.no_grad():
        for fusion in model.fusions:
            fusion.gamma.fill_(0.1)
    model(torch.randn(2, 3, 64, 64)).pow(2).sum().backward()
    assert model.global_stages[0].patch_embed.weight.grad.abs().sum() > 0
    assert all(fusion.gate_logit.grad.abs().sum() > 0 for fusion in model.fusions)


def test_starnet_grid_matches_for_odd_sizes():
    model = StarNetDualPyramidRCF().eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 50, 70)).shape == (1, 192, 2, 3)


def reference_pooled_attention(attn: PooledKVAttention, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Plain softmax(q k^T / sqrt(d)) v with keys/values from the average-pooled grid."""
    b, n, c = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    pooled = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(b, c, *grid),
                                   (min(grid[0], attn.kv_grid), min(grid[1], attn.kv_grid)))
    pooled = attn.kv_norm(pooled.flatten(2).transpose(1, 2))
    k, v = attn.kv(pooled).chunk(2, dim=-1)
    q = attn.q(x)
    split = lambda t: t.reshape(b, -1, heads, d).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(d), dim=-1)
    assert weights.shape[-1] == min(grid[0], attn.kv_grid) * min(grid[1], attn.kv_grid)
    return attn.proj((weights @ split(v)).transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("grid", [(14, 14), (5, 6)])
def test_pooled_kv_attention_matches_reference(grid):
    attn = PooledKVAttention(dim=24, num_heads=2, kv_grid=7)
    x = torch.randn(2, grid[0] * grid[1], 24)
    torch.testing.assert_close(attn(x, grid), reference_pooled_attention(attn, x, grid), atol=1e-5, rtol=1e-4)


def test_stage1_attention_memory_is_bounded_at_224px():
    """56x56 = 3,136 query tokens attend to 49 pooled tokens: the attention matrix is 3,136 x 49."""
    model = StarNetDualPyramidRCF()
    seen = {}
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.setdefault("shapes", []).append((q.shape[-2], k.shape[-2]))
        return real_sdpa(q, k, v, *args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, 224, 224))
    finally:
        torch.nn.functional.scaled_dot_product_attention = real_sdpa
    assert seen["shapes"] == [(3136, 49), (784, 49), (196, 49), (49, 49)]


def test_temperature_is_learnable_and_clamped(text_tower):
    text_model, tokenizer = text_tower
    model = CLIPModel(build_image_encoder("resnet18", pretrained=False), text_model, EMBED_DIM, temperature=0.05)
    assert model.temperature == pytest.approx(0.05)
    image_emb, text_emb, logit_scale = model(torch.randn(4, 3, 32, 32), **tokenize(tokenizer, ["正常", "肺炎"]))
    loss = F.cross_entropy(logit_scale * image_emb @ text_emb.t(), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0
    before = model.logit_scale.item()
    torch.optim.SGD([model.logit_scale], lr=1.0).step()
    assert model.logit_scale.item() != before
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.clamped_logit_scale().item() == pytest.approx(100.0)
    with pytest.raises(ValueError, match="temperature must lie in"):
        CLIPModel(build_image_encoder("resnet18", pretrained=False), text_model, EMBED_DIM, temperature=0.001)


def test_tokenizer_from_written_vocab_covers_chinese(text_encoder_dir, text_tower):
    text_model, tokenizer = text_tower
    vocab = (text_encoder_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert "肺" in vocab and "炎" in vocab
    ids = tokenize(tokenizer, ["肺炎"])["input_ids"][0].tolist()
    assert ids == [tokenizer.cls_token_id, vocab.index("肺"), vocab.index("炎"), tokenizer.sep_token_id]
    assert text_model.pooler is None  # the CLS hidden state is read directly; no unused DDP parameters


def test_missing_text_encoder_gives_clear_error(tmp_path):
    with pytest.raises(OSError, match="(?s)Cannot load text encoder .*local directory"):
        load_text_encoder(str(tmp_path / "no_such_model"))


def test_evaluation_encodes_the_class_texts_once_and_matches_the_joint_forward(text_tower):
    text_model, tokenizer = text_tower
    model = CLIPModel(build_image_encoder("resnet18", pretrained=False, img_size=32), text_model,
                      embed_dim=EMBED_DIM).eval()
    task = ZeroShotCLIPTask(tokenize(tokenizer, ["正常", "肺炎病变"]), ["正常", "肺炎"])
    calls = []
    model.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    batches = [torch.randn(3, 3, 32, 32) for _ in range(3)]
    with torch.no_grad():
        task.on_eval_start(model)
        evaluated = [task.eval_logits(model, images) for images in batches]
        assert len(calls) == 1
        for images, logits in zip(batches, evaluated):
            torch.testing.assert_close(logits, task.logits(model, images)[0])
        task.training_step(model, (batches[0], torch.tensor([0, 1, 0])))  # the weights may change now
        task.eval_logits(model, batches[0])
    assert len(calls) == 1 + 3 + 1 + 1  # the evaluation, 3 joint forwards, the training step, a fresh encoding


@pytest.mark.parametrize("image_encoder", ["resnet18", "starnet_dual_pyramid_rcf"])
def test_export_after_a_training_step_rebuilds_with_the_same_class_probabilities(image_encoder, text_encoder_dir,
                                                                                 tmp_path):
    text_model, tokenizer = load_text_encoder(str(text_encoder_dir))  # a fresh copy: this test trains it
    model = CLIPModel(build_image_encoder(image_encoder, pretrained=False, img_size=32), text_model, EMBED_DIM)
    names, texts = ["正常", "肺炎"], ["这是一张显示正常解剖结构的胸部X光图像", "这是一张显示肺炎病变的胸部X光图像"]
    tokens = tokenize(tokenizer, texts)
    task = ZeroShotCLIPTask(tokens, names)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    task.training_step(model, (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])))["loss"].backward()
    optimizer.step()

    export_dir = export_zero_shot(model, tokenizer, tokens, tmp_path / "export", image_encoder=image_encoder,
                                  img_size=32, class_names=names, class_texts=texts)
    rebuilt, info = load_export(export_dir)
    assert isinstance(rebuilt, ZeroShotClassifier) and info["task"] == "zero-shot" and info["class_names"] == names
    assert info["preprocessing"]["size"] == [32, 32] and info["preprocessing"]["channels"] == 3
    assert not any(p.is_file() and p.suffix == ".bin" for p in export_dir.rglob("*"))  # weights: safetensors only
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        task.on_eval_start(model)
        expected = task.eval_logits(model, images).softmax(dim=1)
        torch.testing.assert_close(rebuilt(images).softmax(dim=1), expected, rtol=1e-5, atol=1e-6)
        # new class texts through the exported tokenizer, as predict.py --class-text does
        exported_tokenizer = AutoTokenizer.from_pretrained(export_dir / info["extra"]["tokenizer_dir"])
        rebuilt.set_class_texts(exported_tokenizer, texts[::-1])
        torch.testing.assert_close(rebuilt(images).softmax(dim=1), expected.flip(1), rtol=1e-5, atol=1e-6)
