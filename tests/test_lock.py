"""scripts/check_lock.py, which `make install` runs: it compares the environment with requirements.lock."""
import importlib.util
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_lock", REPO / "scripts" / "check_lock.py")
check_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_lock)


def test_lock_lines_apply_by_marker_and_mismatches_are_named(tmp_path):
    pytest_version = metadata.version("pytest")
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"PyTest=={pytest_version} ; python_full_version >= '3.0'\n    # via a comment\n"
                    "pyyaml==0.0.1\nno-such-package-xyz==1.0\nnumpy==0.1 ; sys_platform == 'no-such-os'\n")
    pins = check_lock.locked_versions(lock)
    assert pins == {"pytest": pytest_version, "pyyaml": "0.0.1", "no-such-package-xyz": "1.0"}  # numpy's marker is false
    problems = check_lock.mismatches(pins)
    assert problems == ["no-such-package-xyz: locked 1.0, not installed",
                        f"pyyaml: locked 0.0.1, installed {metadata.version('pyyaml')}"]
    assert check_lock.main([str(lock)]) == 1


def test_the_committed_lock_pins_every_line_and_covers_the_direct_dependencies():
    pins = check_lock.locked_versions(REPO / "requirements.lock")
    for name in ("torch", "torchvision", "accelerate", "timm", "transformers", "torchio", "scikit-learn", "pytest"):
        assert name in pins, name
