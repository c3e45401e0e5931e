"""The classifier's shapes and the label-correlation attention's properties."""
import torch

from convnext_cxr.model import CXRClassifier, LabelCorrelation, ModelConfig


def tiny_model():
    torch.manual_seed(0)
    return CXRClassifier(ModelConfig(backbone="convnext_atto", pretrained=False, embed_dim=32, num_heads=2,
                                     head_hidden_dim=16, drop_path_rate=0.0), num_labels=14).eval()


def test_label_attention_differs_per_label_and_sums_to_one_over_tokens():
    model = tiny_model()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 96), return_attention=True)
    assert out["logits"].shape == (2, 14)
    assert out["spatial_attention"].shape == (2, 1, 3, 3)
    attention = out["label_attention"]  # (B, labels, tokens)
    assert attention.shape == (2, 14, 9)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 14))
    per_label_spread = (attention - attention.mean(1, keepdim=True)).abs().amax()
    assert per_label_spread > 1e-3  # labels look at different places, unlike attention over one pooled vector


def test_label_correlation_gradients_reach_label_embeddings():
    module = LabelCorrelation(num_labels=4, dim=16, num_heads=2, dropout=0.0)
    features, attention = module(torch.randn(3, 10, 16))
    assert features.shape == (3, 4, 16) and attention.shape == (3, 4, 10)
    features.sum().backward()
    assert module.label_embed.grad.abs().sum() > 0


def test_heads_are_decoupled():
    model = tiny_model()
    label_features = torch.randn(2, 14, 32, requires_grad=True)
    logits = model.heads(label_features)
    logits[:, 3].sum().backward()
    touched = label_features.grad.abs().sum(dim=(0, 2))
    assert touched[3] > 0 and touched.nonzero().flatten().tolist() == [3]
