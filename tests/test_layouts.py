"""The five layouts read into one manifest, with class ids in dataset order and clear errors."""

import numpy as np
import pytest

from cars_ray.data.layouts import detect_layout, read_dataset
from cars_ray.errors import DataError
from helpers.data import CLASS_NAMES, folder_of, make_image, write_names_csv


def test_folder_layout_keeps_dataset_class_order(folder_dataset):
    manifest = read_dataset(folder_dataset)
    assert manifest.layout == "folder"
    assert manifest.class_names == CLASS_NAMES  # names.csv order, not alphabetical folder order
    zeta = manifest.table[manifest.table.rel_path.str.startswith("Zeta")]
    assert set(zeta.class_index) == {0}
    ram = manifest.table[manifest.table.rel_path.str.startswith("Ram C-V")]
    assert set(ram.class_index) == {2}, "the '-' folder maps back to the name with '/'"
    assert len(manifest.table) == 24 and manifest.table.x1.isna().all()


def test_folder_without_names_is_alphabetical_with_a_note(tmp_path):
    for name in ("b", "a"):
        make_image(tmp_path / "d" / name / "1.jpg")
    manifest = read_dataset(tmp_path / "d", "folder")
    assert manifest.class_names == ["a", "b"] and manifest.notes


def test_devkit_layout(devkit_dataset):
    assert detect_layout(devkit_dataset) == "devkit"
    manifest = read_dataset(devkit_dataset)
    table = manifest.table
    assert manifest.class_names == CLASS_NAMES
    assert (table.orig_split == "train").sum() == 8 and (table.orig_split == "test").sum() == 4
    test_rows = table[table.orig_split == "test"]
    assert (test_rows.class_index == -1).all(), "test annotations without 'class' are unlabelled"
    assert any("unlabelled" in note for note in manifest.notes)
    first = table.iloc[0]
    assert first.rel_path == "cars_train/00001.jpg" and first.class_index == 0
    assert not np.isnan(first.x1)


def test_devkit_under_torchvision_parent(devkit_dataset, tmp_path):
    parent = tmp_path / "tv"
    parent.mkdir()
    devkit_dataset.rename(parent / "stanford_cars")
    assert read_dataset(parent).layout == "devkit"


def test_car_ims_layout(car_ims_dataset):
    manifest = read_dataset(car_ims_dataset)
    assert manifest.layout == "car_ims"
    assert len(manifest.table) == 8
    assert set(manifest.table.orig_split) == {"train", "test"}
    assert manifest.table.class_index.tolist() == [i % 4 for i in range(8)]


def test_kaggle_layout_with_and_without_headers(kaggle_dataset):
    manifest = read_dataset(kaggle_dataset)
    assert manifest.layout == "kaggle"
    assert manifest.class_names == CLASS_NAMES
    assert len(manifest.table) == 16 and manifest.table[["x1", "y1", "x2", "y2"]].notna().all().all()
    assert not manifest.problems


def test_kaggle_missing_image_is_reported_not_guessed(kaggle_dataset):
    anno = kaggle_dataset / "anno_train.csv"
    anno.write_text(anno.read_text() + "99999.jpg,1,1,10,10,1\n")
    manifest = read_dataset(kaggle_dataset)
    missing = [p for p in manifest.problems if "99999.jpg" in p["path"]]
    assert missing and "missing" in missing[0]["reason"] and missing[0]["source"].startswith("anno_train.csv:")
    assert len(manifest.table) == 16


def test_single_car_data_level(kaggle_dataset):
    inner = kaggle_dataset / "car_data" / "car_data"
    for split in ("train", "test"):
        (inner / split).rename(kaggle_dataset / "car_data" / split)
    inner.rmdir()
    assert len(read_dataset(kaggle_dataset).table) == 16


def test_csv_layout(csv_dataset):
    manifest = read_dataset(csv_dataset)
    assert manifest.layout == "csv"
    assert manifest.class_names == CLASS_NAMES
    assert (manifest.table.orig_split == "test").sum() == 2
    assert manifest.table.x1.notna().all()


def test_malformed_annotation_row_names_file_and_line(kaggle_dataset):
    anno = kaggle_dataset / "anno_test.csv"
    lines = anno.read_text().splitlines()
    lines[2] = "00003.jpg,1,abc,10,10,1"
    anno.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"anno_test\.csv:3: field 'y1' is 'abc'"):
        read_dataset(kaggle_dataset)


def test_unknown_layout_names_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no known dataset layout.*cars_annos.mat.*devkit.*names.csv"):
        read_dataset(tmp_path / "empty")


def test_incomplete_devkit_names_missing_file(devkit_dataset):
    (devkit_dataset / "devkit" / "cars_train_annos.mat").unlink()
    with pytest.raises(DataError, match="cars_train_annos.mat"):
        read_dataset(devkit_dataset, "devkit")


def test_unknown_class_id_is_a_problem(tmp_path):
    root = tmp_path / "c"
    make_image(root / "a.jpg")
    make_image(root / "b.jpg")
    write_names_csv(root / "names.csv")
    (root / "m.csv").write_text("path,label\na.jpg,1\nb.jpg,9\n")
    manifest = read_dataset(root / "m.csv")
    assert len(manifest.table) == 1
    assert manifest.problems[0]["reason"] == "unknown class id 9"


def test_folder_names_with_slash_round_trip(folder_dataset):
    manifest = read_dataset(folder_dataset)
    assert folder_of(manifest.class_names[2]) == "Ram C-V Cargo Van Minivan 2012"
