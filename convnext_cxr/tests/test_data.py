"""ChestX-ray14 data: both CSV layouts, nested images, patient split, bad inputs with clear errors."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from shared.cxr14 import FINDINGS, ChestXray14Dataset, load_records, read_label_csv, split_dataset, split_records
from shared.data import IMAGENET_MEAN, IMAGENET_STD, DataError, build_image_transform


def write_images(folder, names, size=16):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((size, size), 128, np.uint8)).save(folder / name)


def test_nih_csv_with_header_quirk_and_nested_images(tmp_path):
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                   "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
                   "00000001_000.png,Cardiomegaly|Effusion,0,1,58,M,PA,2682,2749,0.143,0.143\n"
                   "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.168,0.168\n")
    write_images(tmp_path / "images_001" / "images", ["00000001_000.png"])
    write_images(tmp_path / "images_002" / "images", ["00000002_000.png"])
    records = load_records(csv, tmp_path)
    assert records.labels.shape == (2, 14)
    assert records.labels[0].nonzero()[0].tolist() == [FINDINGS.index("Cardiomegaly"), FINDINGS.index("Effusion")]
    assert records.labels[1].sum() == 0  # "No Finding" is all zeros
    assert records.patients.tolist() == ["1", "2"]
    image, label = ChestXray14Dataset(records, build_image_transform(16, train=False))[0]
    assert image.shape == (3, 16, 16) and label.dtype.is_floating_point
    gray = image * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    assert torch.allclose(gray[0], gray[1], atol=1e-6) and torch.allclose(gray[0], gray[2], atol=1e-6)  # replicated


def test_one_column_per_finding_layout_reads_patient_from_file_name(tmp_path):
    rows = [{"image": f"0000000{p}_00{k}.png", **{f: int(f == "Mass" and p == 1) for f in FINDINGS}}
            for p in (1, 2) for k in (0, 1)]
    pd.DataFrame(rows).to_csv(tmp_path / "filtered_labels.csv", index=False)
    table = read_label_csv(tmp_path / "filtered_labels.csv")
    assert table["patient"].tolist() == ["00000001", "00000001", "00000002", "00000002"]
    assert table["Mass"].tolist() == [1, 1, 0, 0]


def test_patient_split_has_no_leakage_and_is_seeded(tiny_cxr):
    image_dir, csv_path = tiny_cxr
    records = load_records(csv_path, image_dir)
    train, val, test = split_records(records, (0.7, 0.15, 0.15), seed=7)
    parts = [set(train.patients), set(val.patients), set(test.patients)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(train) + len(val) + len(test) == len(records) == 90
    assert 0.55 < len(train) / len(records) < 0.85
    again = split_records(records, (0.7, 0.15, 0.15), seed=7)[2]
    assert again.images == test.images


def test_official_split_lists(tiny_cxr, tmp_path):
    image_dir, csv_path = tiny_cxr
    records = load_records(csv_path, image_dir)
    patients = sorted(set(records.patients))
    test_names = [n for n, p in zip(records.images, records.patients) if p in patients[:5]]
    (tmp_path / "test_list.txt").write_text("\n".join(test_names))
    (tmp_path / "train_val_list.txt").write_text("\n".join(n for n in records.images if n not in test_names))
    train, val, test = split_records(records, seed=0, train_val_list=tmp_path / "train_val_list.txt",
                                     test_list=tmp_path / "test_list.txt")
    assert sorted(test.images) == sorted(test_names)
    assert not set(train.patients) & set(val.patients)


def test_missing_image_is_named(tmp_path, tiny_cxr):
    image_dir, csv_path = tiny_cxr
    table = pd.read_csv(csv_path)
    table.loc[len(table)] = ["99999999_000.png", "Mass", 0, 99999999]
    table.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"^1 of 91 images are missing, e.g. image not found: .*99999999_000.png "
                                        r".*; set data.on_bad_image: skip to train without them\n"):
        load_records(tmp_path / "labels.csv", image_dir)
    with pytest.raises(DataError, match=r"set DATA.on_bad_image: skip"):  # hybridmednet's spelling of the key
        load_records(tmp_path / "labels.csv", image_dir, on_bad_image_key="DATA.on_bad_image")
    with pytest.raises(DataError, match=r"DATA.on_bad_image must be 'error' or 'skip', got 'ignore'"):
        load_records(tmp_path / "labels.csv", image_dir, on_bad_image="ignore", on_bad_image_key="DATA.on_bad_image")
    records = load_records(tmp_path / "labels.csv", image_dir, on_bad_image="skip")
    assert len(records) == 90


def test_corrupt_png_is_named_and_skippable(tmp_path):
    write_images(tmp_path / "images", ["00000001_000.png"])
    (tmp_path / "images" / "00000002_000.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    csv = tmp_path / "labels.csv"
    csv.write_text("Image Index,Finding Labels,Patient ID\n00000001_000.png,Mass,1\n00000002_000.png,Edema,2\n")
    records = load_records(csv, tmp_path / "images")  # existence is checked here; decoding by the preflight
    with pytest.raises(DataError, match="cannot read image .*00000002_000.png"):
        ChestXray14Dataset(records)[1]
    skipped = load_records(csv, tmp_path / "images", on_bad_image="skip")
    assert skipped.images == ["00000001_000.png"] and skipped.verified  # decoded once: the preflight skips them


def test_skipping_a_bad_image_moves_no_other_image(tmp_path, tiny_cxr):
    """The split is made over every CSV row, then bad images drop out: the others keep their split (on main
    the skip re-split the patients, and a resumed run tested on images it had trained on)."""
    image_dir, csv_path = tiny_cxr
    before = split_dataset(image_dir, csv_path, seed=5, on_bad_image="skip")
    copy = tmp_path / "images"
    shutil.copytree(image_dir, copy)
    patient = before[0].patients[0]  # all images of one training patient go bad: one group fewer to split
    victims = {path.name for path, p in zip(before[0].paths, before[0].patients) if p == patient}
    for name in victims:
        (copy / next(image_dir.rglob(name)).relative_to(image_dir)).write_bytes(b"not an image")
    after = split_dataset(copy, csv_path, seed=5, on_bad_image="skip")
    for old, new in zip(before, after):
        assert new.images == [name for name in old.images if name not in victims]
    assert [len(p) for p in after] == [len(before[0]) - len(victims), len(before[1]), len(before[2])]


def test_csv_without_label_column_and_unknown_finding(tmp_path):
    (tmp_path / "a.csv").write_text("Image Index,Patient ID\nx.png,1\n")
    with pytest.raises(DataError, match=r"label columns \['Atelectasis'.*are missing.*'Finding Labels'"):
        read_label_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("Image Index,Finding Labels,Patient ID\nx.png,Cardiomegaly|Covid,1\n")
    with pytest.raises(DataError, match=r"row 2 \(x.png\) has unknown finding 'Covid'"):
        read_label_csv(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("file,Finding Labels\nx.png,Mass\n")
    with pytest.raises(DataError, match="no image column"):
        read_label_csv(tmp_path / "c.csv")
