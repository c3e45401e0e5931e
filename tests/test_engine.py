"""The shared training engine on a toy problem: learning, EMA, early stopping, NaN guard, resume."""
import dataclasses
import json

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset
from torch.utils.tensorboard import SummaryWriter

import shared.accelerator
from shared import (Callback, CheckpointError, ConfigError, EarlyStopping, EarlyStoppingConfig, Engine,
                    MultiLabelTask, NonFiniteLossError, Task, TrainConfig, load_checkpoint, resolve_mixed_precision)
from shared.cli import field_comments
from shared.losses import AsymmetricLoss
from shared.testing import read_scalars, scalar_steps


def toy_data(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 3, generator=torch.Generator().manual_seed(99))  # one labelling rule for all splits
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, ((x @ w) > 0).float())


def toy_model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Dropout(dropout), nn.Linear(32, 3))


def make_cfg(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path / "run"), epochs=3, batch_size=16, num_workers=0, lr=5e-3,
                warmup_epochs=0.5, mixed_precision="no", progress_bar=False, log_every=4, ema_decay=0.9,
                early_stopping=EarlyStoppingConfig(monitor="val/macro_auroc", mode="max", patience=0))
    base.update(overrides)
    return TrainConfig(**base)


def task():
    return MultiLabelTask(AsymmetricLoss(), ["a", "b", "c"])


def test_training_loss_falls_and_outputs_are_written(tmp_path):
    engine = Engine(make_cfg(tmp_path, epochs=4, lr=2e-2), toy_model(), task(), toy_data(), toy_data(64, seed=1))
    history = engine.fit()
    engine.close()
    assert history[-1]["train/loss"] < 0.6 * history[0]["train/loss"]
    assert history[-1]["val/macro_auroc"] > 0.85
    run = tmp_path / "run"
    for name in ("checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_best_ema.pth"):
        assert (run / "checkpoints" / name).is_file()
    assert not list((run / "checkpoints").glob("*.tmp"))  # atomic writes leave no temp files
    assert len(json.loads((run / "history.json").read_text())) == 4
    assert list((run / "logs").rglob("events.out.tfevents*"))
    ema_state = load_checkpoint(run / "checkpoints" / "checkpoint_best_ema.pth")["model"]
    assert not any(k.startswith("module.") for k in ema_state)


def test_warmup_starts_above_zero_and_cosine_reaches_min_lr(tmp_path):
    cfg = make_cfg(tmp_path, epochs=4, lr=1e-2, min_lr=1e-4, warmup_epochs=1, warmup_start_factor=0.01)
    lrs = []

    class RecordLR(Callback):
        def on_train_batch_end(self, engine, batch, outputs):
            lrs.append(engine.optimizer.param_groups[0]["lr"])

    engine = Engine(cfg, toy_model(), task(), toy_data(), None, callbacks=[RecordLR()])
    lrs.append(engine.optimizer.param_groups[0]["lr"])  # the lr of the first step
    engine.fit()
    engine.close()
    steps_per_epoch = engine.updates_per_epoch
    assert lrs[0] == pytest.approx(1e-4)  # lr * warmup_start_factor, not 0
    assert lrs[0] < lrs[1] < lrs[steps_per_epoch - 1]  # warmup rises per step within the first epoch
    assert max(lrs) == pytest.approx(1e-2, rel=0.05)
    assert lrs[-1] < 2e-3 and lrs[-1] >= 1e-4


@pytest.mark.parametrize("name, fused", [("adamw", True), ("adam", True), ("sgd", None)])
def test_adam_optimizers_are_fused_on_cpu(tmp_path, name, fused):
    engine = Engine(make_cfg(tmp_path, optimizer=name, ema=False), toy_model(), task(), toy_data(), None)
    assert engine.optimizer.optimizer.defaults.get("fused") is fused
    engine.fit()  # the fused CPU kernel trains
    engine.close()
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())


def test_ema_is_the_hand_computed_lerp_of_the_weights(tmp_path):
    decay = 0.8
    snapshots = []

    class RecordingTask(MultiLabelTask):
        def training_step(self, model, batch):
            snapshots.append([p.detach().clone() for p in model.parameters()])  # weights after previous step
            return super().training_step(model, batch)

    model = toy_model()
    engine = Engine(make_cfg(tmp_path, epochs=1, ema_decay=decay, lr=1e-2), model,
                    RecordingTask(AsymmetricLoss(), list("abc")), toy_data(64), None)
    engine.fit()
    engine.close()
    weights = snapshots[1:] + [[p.detach().clone() for p in model.parameters()]]  # w_1 .. w_N
    expected = [w.clone() for w in weights[0]]  # step 1 copies the weights
    for step_weights in weights[1:]:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, step_weights)]
    for e, p in zip(expected, engine.ema.module.parameters()):
        torch.testing.assert_close(p, e, rtol=1e-5, atol=1e-6)


def test_early_stopping_semantics():
    stopper = EarlyStopping(mode="max", patience=2, min_delta=0.05)
    decisions = [(stopper.step(v), stopper.should_stop) for v in (0.50, 0.60, 0.62, 0.64, 0.70)]
    # 0.60 beats 0.50 by more than 0.05; 0.62 and 0.64 do not beat 0.60 + 0.05 -> stop after the 2nd
    assert decisions[:4] == [(True, False), (True, False), (False, False), (False, True)]
    minimise = EarlyStopping(mode="min", patience=1)
    assert minimise.step(1.0) and not minimise.step(float("nan")) and minimise.should_stop
    assert not EarlyStopping(patience=0).should_stop


def test_engine_stops_early_on_a_scripted_metric(tmp_path):
    scores = [0.5, 0.6, 0.62, 0.64, 0.9, 0.9]

    class Scripted(MultiLabelTask):
        epoch = 0

        def compute_metrics(self, outputs):
            return {"score": scores[self.epoch], "loss": 0.0}

    class FollowEpoch(Callback):
        def on_epoch_start(self, engine, epoch):
            engine.task.epoch = epoch

    cfg = make_cfg(tmp_path, epochs=6, ema=False,
                   early_stopping=EarlyStoppingConfig(monitor="val/score", mode="max", patience=2, min_delta=0.05))
    engine = Engine(cfg, toy_model(), Scripted(AsymmetricLoss(), list("abc")), toy_data(32), toy_data(16),
                    callbacks=[FollowEpoch()])
    history = engine.fit()
    engine.close()
    assert [h["val/score"] for h in history] == [0.5, 0.6, 0.62, 0.64]
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint_best.pth")
    assert best["epoch"] == 4  # the best checkpoint follows any improvement; min_delta only drives patience
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint_latest.pth")["early_stopping"][
        "num_bad_epochs"] == 2


def test_non_finite_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path):
    class ExplodesInEpoch2(MultiLabelTask):
        calls = 0

        def training_step(self, model, batch):
            self.calls += 1
            loss = super().training_step(model, batch)
            return loss * float("nan") if self.calls > 8 else loss

    engine = Engine(make_cfg(tmp_path, epochs=3, batch_size=16), toy_model(),
                    ExplodesInEpoch2(AsymmetricLoss(), list("abc")), toy_data(128), toy_data(32))
    with pytest.raises(NonFiniteLossError, match="NaN/Inf in epoch 2.*checkpoint_latest.pth"):
        engine.fit()
    kept = load_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint_latest.pth")
    assert kept["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


class KillAfterFirstEpoch(Callback):
    def on_epoch_end(self, engine, epoch, metrics):
        raise KeyboardInterrupt  # as if the job were killed right after the epoch-1 checkpoint


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    data, val = toy_data(96), toy_data(32, seed=1)
    full = Engine(make_cfg(tmp_path / "a", epochs=3), toy_model(dropout=0.3), task(), data, val)
    full_history = full.fit()
    full.close()

    killed = Engine(make_cfg(tmp_path / "b", epochs=3), toy_model(dropout=0.3), task(), data, val,
                    callbacks=[KillAfterFirstEpoch()])
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    resumed = Engine(make_cfg(tmp_path / "b", epochs=3, resume=True), toy_model(seed=123, dropout=0.3), task(),
                     data, val)
    assert resumed.start_epoch == 1
    resumed_history = resumed.fit()
    resumed.close()

    assert len(resumed_history) == len(full_history) == 3
    assert resumed.global_step == full.global_step == 3 * full.updates_per_epoch
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(full.ema.module.parameters(), resumed.ema.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert resumed_history[-1]["val/loss"] == pytest.approx(full_history[-1]["val/loss"], rel=1e-5)
    # TensorBoard: the epoch curve continues after the resume, each epoch once, none dropped
    log_dir = tmp_path / "b" / "run" / "logs" / "tensorboard"
    assert len(list(log_dir.glob("events.out.tfevents*"))) == 2  # the killed run's file and the resumed one
    per_epoch = full.updates_per_epoch
    # read in the order written (not by file name), with the resumed writer's purge_step applied
    assert scalar_steps(log_dir, "train/loss") == [per_epoch, 2 * per_epoch, 3 * per_epoch]


def test_resume_into_a_different_model_is_a_clear_error(tmp_path):
    engine = Engine(make_cfg(tmp_path, epochs=1), toy_model(), task(), toy_data(32), None)
    engine.fit()
    engine.close()
    wider = nn.Sequential(nn.Linear(6, 64), nn.GELU(), nn.Dropout(0.0), nn.Linear(64, 3))
    with pytest.raises(CheckpointError, match="shape mismatches.*0.weight"):
        Engine(make_cfg(tmp_path, epochs=2, resume=True), wider, task(), toy_data(32), None)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Engine(make_cfg(tmp_path, epochs=2, resume=True, resume_checkpoint=str(tmp_path / "nope.pth")),
               toy_model(), task(), toy_data(32), None)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    data = toy_data(64)
    cfg = dict(epochs=1, ema=False, grad_clip=0.0, scheduler="none", optimizer="sgd", lr=0.1, momentum=0.9,
               weight_decay=0.0)

    big = Engine(make_cfg(tmp_path / "big", batch_size=32, **cfg), toy_model(), MultiLabelTask(nn.BCEWithLogitsLoss(),
                 list("abc")), data, None)
    big.fit()
    big.close()
    accum = Engine(make_cfg(tmp_path / "acc", batch_size=32, grad_accum_steps=4, **cfg), toy_model(),
                   MultiLabelTask(nn.BCEWithLogitsLoss(), list("abc")), data, None)
    accum.fit()
    accum.close()
    assert accum.global_step == big.global_step == 2
    for a, b in zip(big.model.parameters(), accum.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_every_checkpoint_names_the_task_classes_and_resume_refuses_another_order(tmp_path):
    engine = Engine(make_cfg(tmp_path, epochs=1), toy_model(), task(), toy_data(32), toy_data(16, seed=1))
    engine.fit()
    engine.close()
    for kind in ("latest", "best", "best_ema"):
        assert load_checkpoint(engine.checkpoint_path(kind))["class_names"] == ["a", "b", "c"]
    reordered = MultiLabelTask(AsymmetricLoss(), ["c", "b", "a"])
    with pytest.raises(CheckpointError, match=r"trained on classes \['a', 'b', 'c'\].*\['c', 'b', 'a'\]"):
        Engine(make_cfg(tmp_path, epochs=2, resume=True), toy_model(), reordered, toy_data(32), None)


def test_tensorboard_logs_read_back_in_written_order_whatever_the_file_names(tmp_path):
    """The flaky-resume cause: a resumed writer's file can sort before the killed run's by name."""
    first = SummaryWriter(str(tmp_path / "killed"))
    for step in (1, 2, 3):
        first.add_scalar("loss", float(step), step)
    first.close()
    resumed = SummaryWriter(str(tmp_path / "resumed"), purge_step=3)  # step 3 of the killed run is dropped
    for step in (3, 4):
        resumed.add_scalar("loss", 10.0 * step, step)
    resumed.close()
    logs = tmp_path / "logs"
    logs.mkdir()
    # names that sort the wrong way round, as "...<same second>.<pid>.10" sorts before "....9"
    next((tmp_path / "killed").glob("events*")).rename(logs / "events.out.tfevents.1700000000.host.1.9")
    next((tmp_path / "resumed").glob("events*")).rename(logs / "events.out.tfevents.1700000000.host.1.10")
    assert read_scalars(logs)["loss"] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_mixed_precision_auto_is_the_default_and_means_fp32_on_cpu(tmp_path):
    assert TrainConfig().mixed_precision == "auto"
    assert resolve_mixed_precision("auto", cpu=True) == "no"
    dtypes = []

    class RecordDtype(MultiLabelTask):
        def eval_step(self, model, batch):
            dtypes.append((batch[0] @ batch[0].T).dtype)  # a matmul under the engine's autocast
            return super().eval_step(model, batch)

    for precision, dtype in (("auto", torch.float32), ("bf16", torch.bfloat16)):  # bf16 on the CPU: autocast
        engine = Engine(make_cfg(tmp_path, mixed_precision=precision, cpu=True, epochs=1, tracker="none"),
                        toy_model(), RecordDtype(AsymmetricLoss(), list("abc")), toy_data(32), None)
        assert engine.accelerator.mixed_precision == ("no" if precision == "auto" else "bf16")
        engine.evaluate(toy_data(16))
        assert dtypes.pop() == dtype


def test_mixed_precision_rule_on_cuda_and_fp16_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for has_bf16, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(shared.accelerator, "_cuda_bf16", lambda: has_bf16)
        assert resolve_mixed_precision("auto") == expected
        assert resolve_mixed_precision("auto", cpu=True) == "no"  # cpu=True trains on the CPU
        assert [resolve_mixed_precision(v) for v in ("bf16", "fp16", "no")] == ["bf16", "fp16", "no"]
    with pytest.warns(RuntimeWarning, match="fp16 needs a CUDA GPU"):
        assert resolve_mixed_precision("fp16", cpu=True) == "bf16"


@pytest.mark.parametrize("value", ["fp32", "BF16", "true", ""])
def test_a_bad_mixed_precision_fails_naming_the_key_and_the_choices(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        Engine(make_cfg(tmp_path, mixed_precision=value), toy_model(), task(), toy_data(32), None)
    message = str(err.value)
    assert "\n" not in message and message.startswith("train.mixed_precision")
    assert repr(value) in message and "bf16, fp16, no, auto" in message


def test_every_engine_setting_documents_its_meaning():
    for cls in (TrainConfig, EarlyStoppingConfig):
        comments = field_comments(cls)
        assert [f.name for f in dataclasses.fields(cls) if not comments.get(f.name)] == [], cls.__name__


def test_a_monitor_typo_and_bad_values_fail_before_the_first_step(tmp_path):
    from shared import ConfigError
    cfg = make_cfg(tmp_path, early_stopping=EarlyStoppingConfig(monitor="val/macro_aurc", mode="max"))
    engine = Engine(cfg, toy_model(), task(), toy_data(), toy_data(32, seed=1))
    with pytest.raises(ConfigError, match=r"monitor='val/macro_aurc' is not a metric this run logs; "
                                          r"did you mean val/macro_auroc\?"):
        engine.fit()
    assert engine.global_step == 0 and not (tmp_path / "run" / "history.json").exists()
    for key, value, rule in (("epochs", -1, ">= 1"), ("lr", -0.1, ">= 0"), ("ema_decay", 1.0, "in \\(0, 1\\)")):
        with pytest.raises(ConfigError, match=f"train.{key} must be {rule}, got {value}"):
            Engine(make_cfg(tmp_path / key, **{key: value}), toy_model(), task(), toy_data(), None)
