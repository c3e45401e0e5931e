"""Fault injection: training runs with 2 loader workers, a random augmentation (Python, NumPy and torch draws)
and dropout are killed at random optimizer steps, by SIGKILL (nothing saved then: ``save_every_steps: 1``
saved the step before) or by SIGTERM (the engine saves the step and exits 143), sent to the run's whole process
group, loader workers included, as Slurm's ``scancel`` does, and resumed with
``train.resume``. Each resumed run must start at the checkpointed step and end with the uninterrupted run's
weights, EMA weights and history, bit for bit.

Every run is a process of its own, forked from one helper process (this file run as a script) that imported
torch and the engine once: a fresh interpreter costs about 8 s of imports on a loaded 2-core machine, and
this test starts 21 runs. A killed run signals its own process group when its step ends (``GroupSignal``, a
callback), so nothing depends on timing. The plan comes from ``random.Random(FAULT_INJECTION_SEED)`` and is printed; set that
environment variable to try other plans."""
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import torch

from shared import Callback, Engine, load_checkpoint

# seed 9: the plan also dies at an epoch's last step (SIGTERM at 6 and 18) and just after one (SIGKILL at 7)
SEED = int(os.environ.get("FAULT_INJECTION_SEED", "9"))
TRIALS, STEPS_PER_EPOCH, EPOCHS = 10, 6, 3  # 96 samples, batch 16


def fault_plan(seed: int) -> list[tuple[str, int]]:
    """(signal, optimizer step to die at) per trial: SIGKILL and SIGTERM alternate. SIGKILL starts at step 2,
    so that a checkpoint exists."""
    rng = random.Random(seed)
    return [("SIGKILL" if i % 2 == 0 else "SIGTERM", rng.randint(2, EPOCHS * STEPS_PER_EPOCH)) for i in range(TRIALS)]


def expected_start(signal_name: str, step: int) -> list:
    """[epoch, global step, batches done in that epoch or None] that the resumed run starts from."""
    saved = step if signal_name == "SIGTERM" else step - 1  # SIGKILL loses the step it died in
    if signal_name == "SIGKILL" and saved % STEPS_PER_EPOCH == 0:
        return [saved // STEPS_PER_EPOCH, saved, None]  # the end-of-epoch checkpoint replaced the step's
    epoch = (saved - 1) // STEPS_PER_EPOCH
    return [epoch, saved, saved - epoch * STEPS_PER_EPOCH]


class GroupSignal(Callback):
    """After optimizer step ``step``, has ``kill`` send ``signum`` to this run's process group (the run and its
    loader workers). The sender is another process, as a scheduler is: torch's workers quietly exit on a
    SIGTERM from their parent only, and die of anyone else's."""

    def __init__(self, signum, step):
        self.signum, self.step = signum, step

    def on_train_batch_end(self, engine, batch, outputs):
        if engine.global_step == self.step:
            subprocess.run(["kill", "-s", signal.Signals(self.signum).name[3:], "--", f"-{os.getpgid(0)}"],
                           start_new_session=True)  # kill itself is outside the group


def train(out: Path, log: Path, resume: bool = False, kill: tuple[str, int] | None = None) -> None:
    """One training process (forked): a new or resumed run in ``out``, output to ``log``; ``kill`` =
    (signal, step) makes it kill itself when that optimizer step ends. Writes ``final.pt`` when it finishes."""
    from test_reproducibility import NoisyToyData, make_cfg, task, toy_model  # tests/ is on sys.path here

    os.setpgid(0, 0)  # a process group of its own: the run and its workers, not the helper

    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    record = {}
    if resume:
        state = load_checkpoint(out / "checkpoints" / "checkpoint_latest.pth")
        partial = state.get("partial_epoch") or {}  # an end-of-epoch checkpoint has none
        record["checkpoint"] = [state["epoch"], state["global_step"], partial.get("batches")]
    engine = Engine(make_cfg(out, num_workers=2, save_every_steps=1, resume=resume), toy_model(), task(),
                    NoisyToyData(96), NoisyToyData(32, seed=1),
                    callbacks=[GroupSignal(getattr(signal, kill[0]), kill[1])] if kill else [])
    record["start"] = [engine.start_epoch, engine.global_step, (engine.partial_epoch or {}).get("batches")]
    log.with_suffix(".json").write_text(json.dumps(record))
    engine.fit()
    engine.close()
    torch.save({"model": engine.model.state_dict(), "ema": engine.ema.module.state_dict(),
                "history": engine.history}, out / "final.pt")


def run_all(root: Path, plan: list[tuple[str, int]]) -> None:
    """The helper process: the uninterrupted run, then per trial the killed run and its resume, each in a
    forked process; their exit codes go to ``root/results.json``."""
    torch.set_num_threads(1)  # before any torch op: no thread pool exists when the runs fork
    import test_reproducibility  # noqa: F401 (imported here once, not in each forked run)
    fork = multiprocessing.get_context("fork")

    def launch(out: Path, log: Path, **kwargs) -> int:
        process = fork.Process(target=train, args=(out, log), kwargs=kwargs)
        process.start()
        process.join()
        return process.exitcode

    results = {"full": launch(root / "full", root / "full.log"), "trials": []}
    for i, kill in enumerate(plan):
        trial = root / f"trial{i}"
        trial.mkdir()
        killed = launch(trial / "run", trial / "killed.log", kill=tuple(kill))
        finished = (trial / "run" / "final.pt").exists()
        resumed = launch(trial / "run", trial / "resumed.log", resume=True)
        results["trials"].append({"killed": killed, "finished_before_resume": finished, "resumed": resumed})
    (root / "results.json").write_text(json.dumps(results))


def test_runs_killed_at_random_steps_resume_to_the_uninterrupted_weights(tmp_path):
    plan = fault_plan(SEED)
    print(f"FAULT_INJECTION_SEED={SEED}: (signal, step) per trial {plan}")
    assert {name for name, _ in plan} == {"SIGKILL", "SIGTERM"}
    assert any(step % STEPS_PER_EPOCH for _, step in plan)  # some die mid-epoch
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    helper = subprocess.run([sys.executable, __file__, str(tmp_path), json.dumps(plan)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert helper.returncode == 0, helper.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["full"] == 0, (tmp_path / "full.log").read_text()[-3000:]
    full = torch.load(tmp_path / "full" / "final.pt", weights_only=True)
    assert len(full["history"]) == EPOCHS

    for i, ((name, step), result) in enumerate(zip(plan, results["trials"])):
        trial = tmp_path / f"trial{i}"
        killed_log, resumed_log = (trial / "killed.log").read_text(), (trial / "resumed.log").read_text()
        assert result["killed"] == {"SIGKILL": -9, "SIGTERM": 143}[name], (i, name, step, killed_log[-3000:])
        assert not result["finished_before_resume"]
        if name == "SIGTERM":
            assert "SIGTERM received" in killed_log and "--train.resume true" in killed_log
        assert result["resumed"] == 0, (i, name, step, resumed_log[-3000:])
        record = json.loads((trial / "resumed.json").read_text())
        assert record["checkpoint"] == record["start"] == expected_start(name, step), (i, name, step)
        resumed = torch.load(trial / "run" / "final.pt", weights_only=True)
        for key in ("model", "ema"):
            assert resumed[key].keys() == full[key].keys()
            assert all(torch.equal(resumed[key][k], full[key][k]) for k in full[key]), (i, name, step, key)
        assert resumed["history"] == full["history"], (i, name, step)


if __name__ == "__main__":
    run_all(Path(sys.argv[1]), json.loads(sys.argv[2]))
