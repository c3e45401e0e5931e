"""Preflight: every split checked before the first training step, so a bad input fails in seconds, not hours.

:func:`preflight` (called by the :class:`~shared.engine.Engine` before it builds its loaders) looks at every
split it is given (``train``, ``val`` and the held-out ones such as ``test``) through what the datasets expose:
``sample_ids`` (file paths in index order), ``labels`` (a class index per sample, or a 0/1 matrix for
multi-label data) and ``groups`` (the patient or subject of each sample). It

* refuses an empty split, and a training split whose labels hold one class;
* prints the class counts per split, and warns when one group (patient) is in two splits;
* records the split in the run folder as ``split.csv`` (``sample,part``): a resumed run must find the same
  files in the same parts, or it is refused (its test metrics could include training images);
  :func:`split_digest` goes into the checkpoints, so resuming another folder's checkpoint is checked too;
* opens and decodes every file (``train.skip_preflight`` skips only this step) in loader worker processes,
  with a progress bar, and fails with every unreadable file named.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .data import DataError, describe_bad_images, is_volume, load_image, single_threaded_worker
from .io import write_csv
from .metrics import class_counts

if TYPE_CHECKING:
    from .engine import Engine

SPLIT_FILE = "split.csv"


def check_file(path: str | Path) -> str | None:
    """None when ``path`` reads and decodes completely (an image, or a NIfTI volume), else why not."""
    path = Path(path)
    if not path.is_file():
        return f"file not found: {path}"
    if is_volume(path):
        import nibabel  # torchio's reader; imported here so 2D projects never load it
        try:
            np.asanyarray(nibabel.load(path).dataobj)  # decodes every voxel: a truncated .nii.gz fails here
        except Exception as err:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
            return f"cannot read volume {path}: {type(err).__name__}: {err}"
        return None
    try:
        load_image(path, mode="L")
    except DataError as err:
        return str(err)
    return None


class _FileChecks(Dataset):
    """Item ``i`` is ``(path, reason or None)``: a DataLoader runs the checks in its worker processes."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, str | None]:
        return self.paths[index], check_file(self.paths[index])


def default_check_workers(processes: int = 1) -> int:
    """The CPUs this process may use, shared between ``processes`` training processes on the machine."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, processes))


def find_bad_files(paths: Sequence[str | Path], workers: int | None = None, progress: bool = True,
                   description: str = "checking files") -> list[tuple[Path, str]]:
    """``(path, reason)`` for every file in ``paths`` that is missing or does not decode, checked by
    ``workers`` processes (default: every CPU; 0 = in this process) with a progress bar."""
    paths = [str(p) for p in paths]
    if not paths:
        return []
    workers = default_check_workers() if workers is None else workers
    loader = DataLoader(_FileChecks(paths), batch_size=16, num_workers=min(workers, len(paths) // 16 + 1),
                        collate_fn=list, worker_init_fn=single_threaded_worker)
    bad = []
    with tqdm(total=len(paths), desc=description, unit="file", disable=not progress, leave=False) as bar:
        for batch in loader:
            bad += [(Path(path), reason) for path, reason in batch if reason is not None]
            bar.update(len(batch))
    return bad


def unreadable_files_error(bad: Sequence[tuple[Path, str]], total: int, how: str = "fix or remove them") -> DataError:
    """One first line (how many, the first reason, what to do), then every bad file, for ``run_cli``."""
    bad = sorted(bad)
    return DataError(f"{len(bad)} of {total} files cannot be read, e.g. {bad[0][1]}; {how}\n"
                     + describe_bad_images(bad))


# ------------------------------------------------------------------------------------------------ the split
def split_parts(datasets: Mapping[str, Dataset]) -> dict[str, list[str]]:
    """Part name -> sample ids, for the datasets that have ``sample_ids``; a sample in two parts is refused."""
    parts = {name: list(map(str, ds.sample_ids)) for name, ds in datasets.items() if hasattr(ds, "sample_ids")}
    seen: dict[str, str] = {}
    for name, ids in parts.items():
        for sample in ids:
            if seen.setdefault(sample, name) != name:
                raise DataError(f"{sample} is in both the {seen[sample]} and the {name} split: its metrics would "
                                f"be measured on a training image; give each file one split")
    return parts


def split_digest(parts: Mapping[str, Sequence[str]]) -> str:
    """A SHA-256 of the (sample, part) pairs, independent of order: equal digests = the same split."""
    lines = sorted(f"{part}\t{sample}" for part, ids in parts.items() for sample in ids)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_split(path: Path) -> dict[str, str]:
    """Sample -> part from a ``split.csv``."""
    import csv
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["sample"]: row["part"] for row in csv.DictReader(handle)}


def check_saved_split(path: Path, parts: Mapping[str, Sequence[str]]) -> None:
    """Refuse data whose split differs from the saved ``split.csv`` in any file: moved to another part, new,
    or gone (a resumed run must train and report on exactly the files its first part did)."""
    saved = read_split(path)
    current = {sample: part for part, ids in parts.items() for sample in ids}
    moved = [f"{s} ({saved[s]} -> {p})" for s, p in current.items() if s in saved and saved[s] != p]
    new = [f"{s} (new)" for s in current if s not in saved]
    gone = [f"{s} (gone)" for s in saved if s not in current]
    if moved or new or gone:
        raise DataError(f"the data or split settings differ from the run's saved split {path}: {len(moved)} file(s) "
                        f"in another split, {len(new)} new, {len(gone)} gone (e.g. {(moved + new + gone)[0]}); "
                        f"resume with the same data and split settings, or start a new run in another "
                        f"train.output_dir")


def record_split(output_dir: Path, parts: Mapping[str, Sequence[str]], resume: bool) -> None:
    """Write ``output_dir/split.csv``; a resumed run keeps the one written before (``shared.resume.open_resume``
    has checked the data against it)."""
    path = Path(output_dir) / SPLIT_FILE
    if not (resume and path.is_file()):
        write_csv(path, ["sample", "part"], [(sample, part) for part, ids in parts.items() for sample in ids])


# --------------------------------------------------------------------------------------- counts and groups
def report_counts(datasets: Mapping[str, Dataset], class_names: Sequence[str] | None) -> str:
    """Refuse an empty split or a one-class training split; return the class-count table as text."""
    with_labels = any(getattr(ds, "labels", None) is not None for ds in datasets.values())
    names = list(class_names or []) if with_labels else []
    lines = [f"{'split':<8}{'samples':>9}  " + "  ".join(names)]
    for part, dataset in datasets.items():
        if len(dataset) == 0:
            raise DataError(f"the {part} split is empty: check the data folder/CSV and the split settings")
        labels = getattr(dataset, "labels", None)
        if labels is None or not names:
            lines.append(f"{part:<8}{len(dataset):>9}")
            continue
        counts = class_counts(labels, len(names))
        if part == "train" and np.asarray(labels).ndim == 1 and np.count_nonzero(counts) < 2:
            only = names[int(np.argmax(counts))]
            raise DataError(f"the training split holds only class {only!r} ({len(dataset)} samples): a classifier "
                            f"needs at least two classes; check the data and the split settings")
        lines.append(f"{part:<8}{len(dataset):>9}  " + "  ".join(f"{n:>{len(name)}}" for n, name in zip(counts, names)))
        missing = [name for name, n in zip(names, counts) if n == 0]
        if missing:
            warnings.warn(f"the {part} split has no samples of {missing}: their metrics will be NaN"
                          + (" and the model never learns them" if part == "train" else ""))
    return "\n".join(lines)


def shared_groups(datasets: Mapping[str, Dataset]) -> dict[str, list[str]]:
    """Group id -> the splits it appears in, for every group (patient, subject) found in more than one."""
    where: dict[str, list[str]] = {}
    for part, dataset in datasets.items():
        for group in dict.fromkeys(map(str, getattr(dataset, "groups", None) or [])):
            where.setdefault(group, []).append(part)
    return {group: parts for group, parts in where.items() if len(parts) > 1}


# ------------------------------------------------------------------------------------------------- all of it
def preflight(engine: "Engine", datasets: Mapping[str, Dataset | None]) -> None:
    """Check ``datasets`` (split name -> dataset; None entries are ignored) for ``engine``'s run: see the module
    docstring. Every process checks its share of the files; all of them raise on a bad one."""
    from accelerate.utils import gather_object

    acc, cfg = engine.accelerator, engine.cfg
    datasets = {name: ds for name, ds in datasets.items() if ds is not None}
    table = report_counts(datasets, engine.task.class_names)
    parts = split_parts(datasets)
    if parts:
        engine.checkpoint_extra["split_digest"] = split_digest(parts)
        if acc.is_main_process:
            record_split(engine.output_dir, parts, cfg.resume)
        acc.wait_for_everyone()
    acc.print(table)
    overlap = shared_groups(datasets)
    if overlap:
        group, where = next(iter(overlap.items()))
        warnings.warn(f"{len(overlap)} patient/group id(s) are in more than one split (e.g. {group!r} in "
                      f"{' and '.join(where)}): validation and test scores will be optimistic; split by group "
                      f"(split.group_pattern for class folders)")
    files = [s for name, ds in datasets.items() if not getattr(ds, "files_verified", False)
             for s in parts.get(name, [])]
    if cfg.skip_preflight and files:
        acc.print("train.skip_preflight: the files were not opened before training")
    if cfg.skip_preflight or not files:
        return
    mine = files[acc.process_index::acc.num_processes]
    bad = find_bad_files(mine, default_check_workers(acc.num_processes), progress=cfg.progress_bar and acc.is_main_process,
                         description="preflight: opening every file")
    bad = gather_object(bad) if acc.num_processes > 1 else bad
    if bad:
        raise unreadable_files_error(bad, len(files), "fix or remove them (or pass --skip-preflight to meet them "
                                                      "only when their batch comes up)")
    acc.print(f"preflight: {len(files)} files of {len(datasets)} splits open and decode")
