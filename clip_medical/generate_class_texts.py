"""Write a class-texts JSON file ({"class": "description"}) for the class folders of a dataset.

Step 1 of the guide's recommended method: generate from a template (or type each description with
``--interactive``), then edit the file and pass it to ``train_clip.py --class-texts-file``.

    python clip_medical/generate_class_texts.py --data-dir single_label_data --output class_texts.json \\
        --template "这是一张{class_name}的医学图像"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from shared import parse_cli, run_cli, scan_class_folders, write_json
from clip_medical.data import format_template

DEFAULT_TEMPLATE = "这是一张{class_name}的医学图像"


def generate_class_texts(class_names: Sequence[str], template: str = DEFAULT_TEMPLATE, interactive: bool = False,
                         ask: Callable[[str], str] = input) -> dict[str, str]:
    """Template text per class; with ``interactive`` each is offered as the default of a prompt."""
    texts = {}
    for name in class_names:
        default = format_template(template, name)
        answer = ask(f"{name} [{default}]: ").strip() if interactive else ""
        texts[name] = answer or default
    return texts


@dataclass
class GenerateConfig:
    data_dir: str = ""  # class-folder root: one folder per class (required)
    output: str = "class_texts.json"  # JSON file to write
    template: str = DEFAULT_TEMPLATE  # must contain {class_name}
    interactive: bool = False  # type a description for each class (the template text is the default)
    force: bool = False  # overwrite an existing output file


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    args = parse_cli(GenerateConfig, argv, description=__doc__)
    if not args.data_dir:
        raise ValueError("--data-dir is required")
    output = Path(args.output)
    if output.exists() and not args.force:
        raise FileExistsError(f"{output} exists (it may hold edited descriptions); pass --force to overwrite")
    _, class_names = scan_class_folders(args.data_dir)
    texts = generate_class_texts(class_names, args.template, args.interactive)
    write_json(output, texts)
    print(f"wrote {len(texts)} class texts to {output}")
    return texts


if __name__ == "__main__":
    run_cli(main)
