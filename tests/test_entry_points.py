"""Every entry point of every project speaks the one command line: ``--help`` lists every key, each with
its default and a one-line meaning, and exits 0."""
import contextlib
import importlib
import io

import pytest

ENTRY_POINTS = [
    "convnext_cxr.train", "convnext_cxr.predict", "convnext_cxr.prepare_cache",
    "clip_medical.train_clip", "clip_medical.predict", "clip_medical.demo", "clip_medical.generate_class_texts",
    "clip_medical.test_clip_model",
    "hybridmednet.train", "hybridmednet.benchmark", "hybridmednet.test_modern_models",
    "convnext_v2.train", "convnext_v2.predict_flowers",
    "alzheimer_mosa.train_mosa", "alzheimer_mosa.prepare_cache", "alzheimer_mosa.pretrain_resnet", "shared.evaluate",
    "shared.serve",
]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_lists_every_key_with_a_meaning(module):
    main = importlib.import_module(module).main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    keys = [line for line in out.getvalue().splitlines() if line.startswith("  --") and " = " in line]
    assert keys, f"{module} --help lists no keys"
    undocumented = [line.split()[0] for line in keys if "  " not in line.split(" = ", 1)[1]]
    assert undocumented == []
