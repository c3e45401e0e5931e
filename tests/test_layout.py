"""The shared package stays a set of small single-purpose modules."""
from pathlib import Path

import pytest

import shared

SHARED = Path(shared.__file__).resolve().parent
MAX_LINES = 350


@pytest.mark.parametrize("module", sorted(p.name for p in SHARED.glob("*.py")))
def test_no_shared_module_exceeds_350_lines(module):
    lines = len((SHARED / module).read_text().splitlines())
    assert lines <= MAX_LINES, f"shared/{module} has {lines} lines; split it into smaller modules"


def test_the_engine_names_stay_importable_from_shared_engine():
    from shared.engine import (Callback, EarlyStopping, EarlyStoppingConfig, Engine,  # noqa: F401
                               NonFiniteLossError, Task, TrainConfig, fused_optimizer_kwargs, process_state)
    assert shared.Engine is Engine and shared.TrainConfig is TrainConfig and shared.Task is Task
