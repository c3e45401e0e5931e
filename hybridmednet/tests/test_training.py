"""Each TRAIN / LOSS option changes training the way the config says (on the shared Engine)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridmednet.losses import HierarchicalLoss, build_finding_loss, group_max, membership_matrix
from hybridmednet.models.classifier import HierarchicalOutput
from hybridmednet.train import build_engine
from shared import Callback
from shared.cxr14 import FINDINGS


class Recorder(Callback):
    """The learning rate of every optimizer update (``lrs[i]`` drove update i+1) and the training_step outputs."""

    def __init__(self):
        self.lrs, self.outputs = [], []

    def on_fit_start(self, engine):
        self.lrs.append(engine.optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, engine, batch, outputs):  # after the update and the scheduler step
        self.lrs.append(engine.optimizer.param_groups[0]["lr"])
        self.outputs.append({k: v.detach().item() for k, v in outputs.items()})


def _train(config, dataset, val_dataset=None, callbacks=()):
    labels = dataset.tensors[1].numpy()
    engine = build_engine(config, dataset, val_dataset, labels, callbacks=callbacks)
    engine.fit()
    engine.close()
    return engine


def _parameters(engine) -> torch.Tensor:
    model = engine.accelerator.unwrap_model(engine.model)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_guide_train_keys_reach_the_engine(make_config, tiny_dataset):
    """The guide's TRAIN keys are the shared engine's settings (no translation step in between)."""
    config = make_config(TRAIN={"amp_dtype": "bf16", "gradient_accumulation_steps": 4, "warmup_epochs": 2.5,
                                "early_stopping_patience": 3, "learning_rate": 3e-4, "lr_scheduler": "step",
                                "save_every": 7, "log_every": 5})
    engine = build_engine(config, tiny_dataset, None, tiny_dataset.tensors[1].numpy())
    cfg = engine.cfg
    assert cfg is config.train
    assert (cfg.mixed_precision, cfg.grad_accum_steps, cfg.warmup_epochs, cfg.lr, cfg.scheduler) == (
        "bf16", 4, 2.5, 3e-4, "step")
    assert (cfg.early_stopping.patience, cfg.early_stopping.monitor, cfg.save_every, cfg.log_every) == (
        3, "val/macro_auroc", 7, 5)
    assert engine.optimizer.param_groups[0]["initial_lr"] == pytest.approx(3e-4)
    assert engine.accelerator.gradient_accumulation_steps == 4 and engine.accelerator.mixed_precision == "bf16"
    engine.close()


def test_a_killed_run_loses_at_most_one_epoch_by_default():
    """checkpoint_latest is written every epoch (the source's save_freq 5 lost up to five epochs to a kill)."""
    from hybridmednet.configs.default_config import default_train
    assert default_train().save_every == 1


def test_unknown_scheduler_is_an_error(make_config, tiny_dataset):
    with pytest.raises(ValueError, match="linear"):
        config = make_config(TRAIN={"lr_scheduler": "linear"})
        build_engine(config, tiny_dataset, None, tiny_dataset.tensors[1].numpy())


@pytest.mark.parametrize("warmup_epochs", [0.0, 1.0])
def test_warmup_ramps_the_learning_rate(make_config, tiny_dataset, warmup_epochs):
    config = make_config(TRAIN={"warmup_epochs": warmup_epochs, "epochs": 2, "batch_size": 2, "learning_rate": 1e-3})
    recorder = Recorder()
    _train(config, tiny_dataset, callbacks=[recorder])
    first_epoch = recorder.lrs[:5]  # 8 images / batch 2 = 4 updates, plus the rate after them
    if warmup_epochs:
        assert first_epoch[0] == pytest.approx(1e-3 * 0.01)  # starts at 1% of the learning rate
        assert all(a < b for a, b in zip(first_epoch, first_epoch[1:]))
        assert first_epoch[-1] == pytest.approx(1e-3)  # the full rate when warmup ends
    else:
        assert first_epoch[0] == pytest.approx(1e-3)  # cosine from the full rate at once
        assert all(a > b for a, b in zip(first_epoch, first_epoch[1:]))


@pytest.mark.parametrize("mixed_precision,dtype", [("bf16", torch.bfloat16), ("no", torch.float32)])
def test_mixed_precision_flag_switches_autocast(make_config, tiny_dataset, mixed_precision, dtype):
    config = make_config(train={"mixed_precision": mixed_precision})
    seen = []
    engine = build_engine(config, tiny_dataset, None, tiny_dataset.tensors[1].numpy())
    model = engine.accelerator.unwrap_model(engine.model)
    model.fusion.register_forward_hook(lambda _m, _args, out: seen.append(out.dtype))
    engine.fit()
    engine.close()
    assert seen == [dtype]  # one training step at batch 8


def test_gradient_accumulation_equals_the_larger_batch(make_config, tiny_dataset):
    """Batch 8 in one step vs 2 micro-batches of 4 accumulated: the same single SGD update.

    With the batch-independent head (``head_norm: layer``); BatchNorm statistics are per micro-batch.
    """
    common = {"optimizer": "sgd", "learning_rate": 0.5, "weight_decay": 0.0, "lr_scheduler": "none", "batch_size": 8}
    initial = None
    results = []
    for steps in (1, 2):
        config = make_config(MODEL={"head_norm": "layer"}, TRAIN={**common, "gradient_accumulation_steps": steps})
        config.train.output_dir += f"_accum{steps}"  # two runs: two folders (a run folder is never overwritten)
        engine = build_engine(config, tiny_dataset, None, tiny_dataset.tensors[1].numpy())
        initial = _parameters(engine) if initial is None else initial
        torch.testing.assert_close(_parameters(engine), initial)  # same seeded initialisation
        engine.fit()
        engine.close()
        assert engine.global_step == 1
        results.append(_parameters(engine))
    update = (results[0] - initial).abs().max()
    assert update > 1e-3  # the step did something
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("patience,expected_epochs", [(1, 2), (0, 3)])
def test_early_stopping_stops_when_the_metric_stalls(make_config, tiny_dataset, patience, expected_epochs):
    # learning rate 0: the validation metric cannot improve after the first epoch
    # (the batch-independent head: BatchNorm running statistics would still move without learning)
    config = make_config(MODEL={"head_norm": "layer"},
                         TRAIN={"epochs": 3, "learning_rate": 0.0, "min_lr": 0.0, "lr_scheduler": "none",
                                "early_stopping_patience": patience})
    with pytest.warns(RuntimeWarning):  # findings without positives in the 8 validation images
        engine = _train(config, tiny_dataset, val_dataset=tiny_dataset)
    assert len(engine.history) == expected_epochs


def test_pos_weight_auto_is_negatives_over_positives_and_raises_positive_scores(make_config, tiny_dataset):
    labels = tiny_dataset.tensors[1].numpy()
    loss = build_finding_loss(make_config(LOSS={"pos_weight": "auto"}).LOSS, labels)
    assert loss.pos_weight[0] == pytest.approx(7.0) and loss.pos_weight[1] == pytest.approx(1.0)
    positives = tiny_dataset.tensors[1].bool()
    mean_positive_probability = {}
    for pos_weight in (None, "auto"):
        config = make_config(LOSS={"pos_weight": pos_weight}, TRAIN={"epochs": 3, "learning_rate": 1e-2})
        config.train.output_dir += f"_{pos_weight}"  # two runs: two folders (a run folder is never overwritten)
        engine = _train(config, tiny_dataset)
        _, outputs = engine.evaluate(tiny_dataset)
        probabilities = torch.sigmoid(torch.from_numpy(outputs["logits"]))
        mean_positive_probability[pos_weight] = probabilities[positives].mean().item()
    assert mean_positive_probability["auto"] > mean_positive_probability[None] + 0.02


def test_pos_weight_list_must_match_the_findings(make_config):
    with pytest.raises(ValueError, match="2 values for 14 findings"):
        build_finding_loss(make_config(LOSS={"pos_weight": [1.0, 2.0]}).LOSS, np.zeros((4, 14)))


def _hierarchical_loss(coarse_weight=0.4, fine_weight=0.6, consistency_weight=0.2):
    membership = membership_matrix({"a": FINDINGS[:5], "b": FINDINGS[5:9], "c": FINDINGS[9:]}, FINDINGS)
    return HierarchicalLoss(torch.nn.BCEWithLogitsLoss(), membership, coarse_weight, fine_weight, consistency_weight)


def test_hierarchical_loss_terms_follow_their_definitions():
    loss_fn = _hierarchical_loss()
    coarse, fine = torch.randn(4, 3), torch.randn(4, 14)
    targets = (torch.rand(4, 14) < 0.3).float()
    grouped = torch.stack([targets[:, :5].amax(1), targets[:, 5:9].amax(1), targets[:, 9:].amax(1)], 1)
    probs = fine.sigmoid()
    grouped_probs = torch.stack([probs[:, :5].amax(1), probs[:, 5:9].amax(1), probs[:, 9:].amax(1)], 1)
    terms = loss_fn(HierarchicalOutput(coarse, fine), targets)
    torch.testing.assert_close(group_max(targets, loss_fn.membership), grouped)
    torch.testing.assert_close(terms["coarse_loss"], F.binary_cross_entropy_with_logits(coarse, grouped))
    torch.testing.assert_close(terms["fine_loss"], F.binary_cross_entropy_with_logits(fine, targets))
    torch.testing.assert_close(terms["consistency_loss"], F.mse_loss(coarse.sigmoid(), grouped_probs))
    torch.testing.assert_close(terms["loss"], 0.4 * terms["coarse_loss"] + 0.6 * terms["fine_loss"]
                               + 0.2 * terms["consistency_loss"])


@pytest.mark.parametrize("weights,coarse_has_grad,fine_has_grad", [
    ((0.0, 1.0, 0.0), False, True),   # fine loss only: the coarse logits are not trained
    ((1.0, 0.0, 0.0), True, False),   # coarse loss only
    ((0.0, 0.0, 1.0), True, True),    # consistency couples both heads
])
def test_each_hierarchical_weight_routes_gradient_to_its_head(weights, coarse_has_grad, fine_has_grad):
    coarse, fine = torch.randn(4, 3, requires_grad=True), torch.randn(4, 14, requires_grad=True)
    targets = (torch.rand(4, 14) < 0.3).float()
    _hierarchical_loss(*weights)(HierarchicalOutput(coarse, fine), targets)["loss"].backward()
    assert (coarse.grad.abs().sum() > 0) == coarse_has_grad
    assert (fine.grad.abs().sum() > 0) == fine_has_grad


def test_membership_rejects_unknown_or_unassigned_findings():
    with pytest.raises(ValueError, match="unknown findings \\['Covid'\\]"):
        membership_matrix({"a": ["Covid"]}, FINDINGS)
    with pytest.raises(ValueError, match="exactly one group"):
        membership_matrix({"a": list(FINDINGS[:3])}, FINDINGS)


@pytest.mark.parametrize("term,weights", [
    ("coarse_loss", {"coarse_weight": 1.0, "fine_weight": 0.0, "consistency_weight": 0.0}),
    ("consistency_loss", {"coarse_weight": 0.0, "fine_weight": 0.0, "consistency_weight": 1.0}),
    ("fine_loss", {"coarse_weight": 0.0, "fine_weight": 1.0, "consistency_weight": 0.0}),
])
def test_hierarchical_training_reduces_the_weighted_term(make_config, tiny_dataset, term, weights):
    config = make_config(MODEL={"hierarchical": True}, LOSS=weights,
                         TRAIN={"epochs": 6, "learning_rate": 3e-3})
    recorder = Recorder()
    engine = _train(config, tiny_dataset, callbacks=[recorder])
    values = [step[term] for step in recorder.outputs]
    assert values[-1] < 0.8 * values[0], values
    metrics, _ = engine.evaluate(tiny_dataset)
    assert {"coarse_loss", "consistency_loss", "coarse/macro_auroc"} <= set(metrics)
