"""Labelled data for external validation, in the layouts the projects train on, matched to an export.

:func:`external_samples` turns ``--data`` into file paths and targets in the *exported model's* class order:

* a class-folder tree ``DATA/<class>/<file>`` (images for 2D models, NIfTI volumes for 3D ones): each folder
  must be one of the model's classes (a site may lack some classes);
* a CSV: NIH's ChestX-ray14 layout for multi-label models (``Finding Labels`` or one 0/1 column per
  finding, images found below ``--images``), else a manifest ``path,label`` (paths relative to the CSV).

Everything that would make the report wrong fails here, before any file is scored: an unknown label (both
class lists named), a 3D volume for a 2D model or an image for a 3D one, an empty folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .data import IMAGE_EXTENSIONS, VOLUME_SUFFIXES, DataError, is_volume


def _check_dimensions(paths: Sequence[Path], spatial_dims: int, source: str | Path) -> None:
    """A 3D volume given to a 2D model, or an image to a 3D one, is refused naming one such file."""
    wrong = [p for p in paths if is_volume(p) != (spatial_dims == 3)]
    if wrong:
        given, model = ("a 3D volume", "2D") if spatial_dims == 2 else ("a 2D image", "3D")
        raise DataError(f"{wrong[0]} is {given}, but the model is a {model} model ({len(wrong)} such file(s) in "
                        f"{source}); give it data of its own kind")


def _class_index(labels: Sequence[str], class_names: Sequence[str], source: str | Path) -> np.ndarray:
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"{source}: label(s) {unknown} are not among the model's classes {list(class_names)}; "
                        f"rename them to the model's class names")
    return np.array([index[label] for label in labels], dtype=np.int64)


def class_folder_samples(root: Path, class_names: Sequence[str], spatial_dims: int) -> tuple[list[Path], np.ndarray]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"no class folders in {root}; expected {root}/<class name>/<files> with the model's classes "
                        f"{list(class_names)}")
    readable = IMAGE_EXTENSIONS + VOLUME_SUFFIXES
    paths, labels = [], []
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(readable))
        paths += files
        labels += [folder.name] * len(files)
    if not paths:
        raise DataError(f"{root}: the class folders {[f.name for f in folders]} hold no image or NIfTI files")
    targets = _class_index(labels, class_names, root)
    _check_dimensions(paths, spatial_dims, root)
    return paths, targets


def csv_samples(csv_path: Path, images: str | Path | None, class_names: Sequence[str], task: str,
                spatial_dims: int) -> tuple[list[Path], np.ndarray]:
    if task == "multi-label":
        from .cxr14 import index_images, read_label_csv
        if not images:
            raise DataError(f"{csv_path} is a label CSV: give the image folder with --images")
        table = read_label_csv(csv_path, class_names)  # names unknown findings and missing columns
        on_disk = index_images(images)
        missing = [name for name in table["image"] if name not in on_disk]
        if missing:
            raise DataError(f"{len(missing)} image(s) listed in {csv_path} are not below {images}, e.g. {missing[0]}")
        paths = [on_disk[name] for name in table["image"]]
        targets = table[list(class_names)].to_numpy(np.float32)
    else:
        table = pd.read_csv(csv_path)
        if not {"path", "label"} <= set(table.columns):
            raise DataError(f"{csv_path}: expected columns path,label (a manifest), found {list(table.columns)}")
        paths = [p if p.is_absolute() else csv_path.parent / p for p in map(Path, table["path"].astype(str))]
        targets = _class_index(list(table["label"].astype(str)), class_names, csv_path)
    if not paths:
        raise DataError(f"{csv_path} lists no samples")
    _check_dimensions(paths, spatial_dims, csv_path)
    return paths, targets


def external_samples(data: str | Path, info: Mapping, images: str | Path | None = None
                     ) -> tuple[list[Path], np.ndarray]:
    """(paths, targets) of ``data`` for the export described by ``info`` (its ``model.json``): class indices
    for multi-class and zero-shot models, a 0/1 matrix in the model's class order for multi-label ones."""
    data = Path(data)
    class_names, task = list(info["class_names"]), info["task"]
    spatial_dims = int(info["preprocessing"].get("spatial_dims", 2))
    if data.is_dir():
        if task == "multi-label":
            raise DataError(f"{data} is a folder, but the model is multi-label: give its label CSV as --data and "
                            f"the image folder as --images")
        return class_folder_samples(data, class_names, spatial_dims)
    if data.is_file() and data.suffix.lower() == ".csv":
        return csv_samples(data, images, class_names, task, spatial_dims)
    raise DataError(f"--data {data}: not a class-folder tree or a .csv file")
