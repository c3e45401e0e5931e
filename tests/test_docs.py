"""The READMEs a new user follows name only paths inside the repository (no one machine's folders)."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# an absolute path such as /root/.cache/x or /home/me/data: a slash that starts a word, not part of a URL,
# a relative path or a --set key, followed by at least one more folder
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~$-])/[A-Za-z_][\w.-]*/[\w./-]+")


def readmes() -> list[Path]:
    return sorted(p for p in REPO.rglob("README.md") if not {".venv", "node_modules"} & set(p.parts))


def test_pattern_finds_machine_paths_and_spares_urls_and_repository_paths():
    text = "source /root/.cache/medcls/venv/bin/activate; see https://github.com/a/b and bench/results/x.json"
    assert ABSOLUTE_PATH.findall(text) == ["/root/.cache/medcls/venv/bin/activate"]


def test_readmes_name_no_absolute_paths():
    assert len(readmes()) >= 6
    found = {str(p.relative_to(REPO)): ABSOLUTE_PATH.findall(p.read_text()) for p in readmes()}
    assert {name: paths for name, paths in found.items() if paths} == {}


def test_readme_names_only_modules_and_functions_that_exist():
    text = (REPO / "README.md").read_text()
    modules = set(re.findall(r"`(shared/\w+\.py)", text)) | set(re.findall(r"(shared/\w+\.py)`", text))
    assert len(modules) >= 15
    assert [m for m in sorted(modules) if not (REPO / m).is_file()] == []
    import shared
    for name in ("parse_cli", "evaluate_best", "export_model", "load_export", "write_json", "Engine", "TrainConfig"):
        assert name in text and hasattr(shared, name)
