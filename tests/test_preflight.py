"""The engine's preflight: every file of every split opened before the first step, class counts per split,
empty and one-class splits refused, a patient in two splits warned about, and the split kept as a file that a
resume must match."""
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import Dataset

from shared import CheckpointError, DataError, Engine, MultiClassTask, TrainConfig
from shared.cli import parse_cli
from shared.preflight import SPLIT_FILE, check_file, find_bad_files, read_split


class ImageFiles(Dataset):
    """8x8 grayscale PNGs with a class index and a patient id, as the projects' datasets expose them."""

    def __init__(self, paths, labels, groups):
        self.paths, self.labels, self.groups = [str(p) for p in paths], np.asarray(labels), list(groups)

    @property
    def sample_ids(self):
        return self.paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        pixels = np.asarray(Image.open(self.paths[i]), dtype=np.float32) / 255
        return torch.from_numpy(pixels).flatten(), int(self.labels[i])


def write_pngs(folder, count, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"img{i:03d}.png"
        Image.fromarray(np.full((8, 8), 20 * (i % 2) + 100, np.uint8)).save(path)
        paths.append(path)
    return paths


def splits(tmp_path, n_train=16, n_val=8, n_test=8):
    """train/val/test datasets of alternating classes, one patient per image (p<i>)."""
    paths = write_pngs(tmp_path / "data", n_train + n_val + n_test)
    def part(lo, hi):
        return ImageFiles(paths[lo:hi], [i % 2 for i in range(lo, hi)], [f"p{i}" for i in range(lo, hi)])
    return part(0, n_train), part(n_train, n_train + n_val), part(n_train + n_val, n_train + n_val + n_test)


def make_engine(out, train, val, test, **overrides):
    cfg = TrainConfig(**{**dict(output_dir=str(out), epochs=1, batch_size=8, num_workers=0, mixed_precision="no",
                                progress_bar=False, tracker="none", ema=False), **overrides})
    torch.manual_seed(0)
    return Engine(cfg, nn.Linear(64, 2), MultiClassTask(nn.CrossEntropyLoss(), ["a", "b"]), train, val, held_out={"test": test})


def test_a_corrupt_test_image_fails_before_training_naming_the_file(tmp_path, capsys):
    train, val, test = splits(tmp_path)
    broken = test.paths[5]
    with open(broken, "r+b") as handle:  # a truncated PNG: its header opens, its pixels do not decode
        handle.truncate(40)
    with pytest.raises(DataError, match=rf"^1 of 32 files cannot be read, e.g. cannot read image {broken}"):
        make_engine(tmp_path / "run", train, val, test)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained, nothing saved
    engine = make_engine(tmp_path / "run2", train, val, test, skip_preflight=True)  # for people who know
    assert engine.global_step == 0 and "skip_preflight" in capsys.readouterr().out


def test_class_counts_per_split_are_printed(tmp_path, capsys):
    make_engine(tmp_path / "run", *splits(tmp_path, n_train=10, n_val=6, n_test=4))
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert ["split", "samples", "a", "b"] in rows
    assert ["train", "10", "5", "5"] in rows and ["val", "6", "3", "3"] in rows and ["test", "4", "2", "2"] in rows
    assert "preflight: 20 files of 3 splits open and decode" in out


def test_an_empty_split_and_a_one_class_training_split_are_refused(tmp_path):
    train, val, test = splits(tmp_path)
    empty = ImageFiles([], [], [])
    with pytest.raises(DataError, match="the test split is empty"):
        make_engine(tmp_path / "a", train, val, empty)
    one_class = ImageFiles(train.paths[::2], train.labels[::2], train.groups[::2])
    with pytest.raises(DataError, match="the training split holds only class 'a' \\(8 samples\\)"):
        make_engine(tmp_path / "b", one_class, val, test)


def test_a_file_in_two_splits_is_refused_and_a_patient_in_two_splits_warned(tmp_path):
    train, val, test = splits(tmp_path)
    leaked = ImageFiles(test.paths + train.paths[:1], list(test.labels) + [0], test.groups + ["x"])
    with pytest.raises(DataError, match=f"{train.paths[0]} is in both the train and the test split"):
        make_engine(tmp_path / "a", train, val, leaked)
    same_patient = ImageFiles(test.paths, test.labels, [train.groups[0]] + test.groups[1:])
    with pytest.warns(UserWarning, match="1 patient/group id\\(s\\) are in more than one split \\(e.g. 'p0' in "
                                         "train and test\\)"):
        make_engine(tmp_path / "b", train, val, same_patient)


def test_the_split_is_a_file_that_a_resume_must_match(tmp_path):
    train, val, test = splits(tmp_path)
    engine = make_engine(tmp_path / "run", train, val, test)
    engine.fit()
    saved = read_split(tmp_path / "run" / SPLIT_FILE)
    assert [saved[p] for p in train.paths + val.paths + test.paths] == ["train"] * 16 + ["val"] * 8 + ["test"] * 8
    make_engine(tmp_path / "run", train, val, test, resume=True)  # the same split: resumes
    moved = ImageFiles(val.paths[1:], val.labels[1:], val.groups[1:])
    grown = ImageFiles(test.paths + val.paths[:1], list(test.labels) + [val.labels[0]], test.groups + ["q"])
    with pytest.raises(DataError, match=rf"differ from the run's saved split .*: 1 file\(s\) in another split, "
                                        rf"0 new, 0 gone \(e.g. {val.paths[0]} \(val -> test\)\)"):
        make_engine(tmp_path / "run", train, moved, grown, resume=True)
    # another folder resuming this run's checkpoint has no split.csv of its own: the checkpoint's digest decides
    with pytest.raises(CheckpointError, match="was trained on another split of the data"):
        make_engine(tmp_path / "other", train, moved, grown, resume=True,
                    resume_checkpoint=str(tmp_path / "run" / "checkpoints" / "checkpoint_latest.pth"))
    make_engine(tmp_path / "run", train, moved, grown, overwrite=True)  # a new run there writes its own split
    assert read_split(tmp_path / "run" / SPLIT_FILE)[val.paths[0]] == "test"


def test_parallel_file_check_finds_what_a_serial_one_finds(tmp_path):
    paths = write_pngs(tmp_path, 40)
    for index in (3, 17, 38):
        paths[index].write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    paths.append(tmp_path / "missing.png")
    serial = find_bad_files(paths, workers=0, progress=False)
    parallel = find_bad_files(paths, workers=2, progress=False)
    assert sorted(serial) == sorted(parallel)
    assert sorted(p.name for p, _ in parallel) == ["img003.png", "img017.png", "img038.png", "missing.png"]
    assert check_file(paths[0]) is None and check_file(tmp_path / "missing.png").startswith("file not found")


def test_a_truncated_nifti_volume_is_found(tmp_path):
    import nibabel
    path = tmp_path / "brain.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.random.default_rng(0).random((16, 16, 16)).astype(np.float32), np.eye(4)),
                 path)
    assert check_file(path) is None
    path.write_bytes(path.read_bytes()[:-200])  # the gzip stream ends early: only a full decode notices
    assert "cannot read volume" in check_file(path)


def test_skip_preflight_is_a_flag_of_every_project():
    @dataclass
    class Config:
        train: TrainConfig = field(default_factory=TrainConfig)

    assert parse_cli(Config, ["--skip-preflight"]).train.skip_preflight is True
    assert parse_cli(Config, []).train.skip_preflight is False
