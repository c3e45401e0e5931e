"""The shared package stays a set of small single-purpose modules; the projects speak its one dialect."""
import re
from pathlib import Path

import pytest

import shared

SHARED = Path(shared.__file__).resolve().parent
MAX_LINES = 350
PROJECTS = ("convnext_cxr", "clip_medical", "hybridmednet", "convnext_v2", "alzheimer_mosa")
REPO = SHARED.parent


@pytest.mark.parametrize("module", sorted(p.name for p in SHARED.glob("*.py")))
def test_no_shared_module_exceeds_350_lines(module):
    lines = len((SHARED / module).read_text().splitlines())
    assert lines <= MAX_LINES, f"shared/{module} has {lines} lines; split it into smaller modules"


def test_the_engine_names_stay_importable_from_shared_engine():
    from shared.engine import (Callback, EarlyStopping, EarlyStoppingConfig, Engine,  # noqa: F401
                               NonFiniteLossError, Task, TrainConfig, fused_optimizer_kwargs, process_state)
    assert shared.Engine is Engine and shared.TrainConfig is TrainConfig and shared.Task is Task


@pytest.mark.parametrize("project", PROJECTS)
def test_projects_have_no_parser_json_writer_or_long_train_script_of_their_own(project):
    sources = {p: p.read_text() for p in (REPO / project).rglob("*.py") if "tests" not in p.parts}
    own_parser = [str(p) for p, text in sources.items() if re.search(r"^\s*import argparse|ArgumentParser\(", text, re.M)]
    own_json = [str(p) for p, text in sources.items() if re.search(r"json\.dumps?\(", text)]
    assert own_parser == [] and own_json == []  # shared.parse_cli and shared.write_json do these jobs
    long_train = {p.name: n for p, text in sources.items() if p.name.startswith("train")
                  for n in [len(text.splitlines())] if n > 150}
    assert long_train == {}
