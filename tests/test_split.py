"""Stratified, seeded splits: byte-identical on re-run, per-class, official protocol."""

import pandas as pd
import pytest

from cars_ray.data.layouts import read_dataset
from cars_ray.data.split import apply_split, read_split_file, stratified_split
from cars_ray.errors import DataError
from helpers.data import run_pipeline


def test_split_is_byte_identical_and_stratified(folder_dataset, tmp_path):
    outs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for out in outs:
        proc = run_pipeline("split.py", "--root-dir", str(folder_dataset), "--out", str(out),
                            "--val", "0.17", "--test", "0.34", "--seed", "3")
        assert proc.returncode == 0, proc.stderr
    assert outs[0].read_bytes() == outs[1].read_bytes()
    split = pd.read_csv(outs[0])
    assert list(split.columns) == ["path", "class_id", "split"]
    per_class = split.groupby(["class_id", "split"]).size().unstack()
    assert (per_class["test"] == 2).all() and (per_class["val"] == 1).all() and (per_class["train"] == 3).all()


def test_different_seed_differs(folder_dataset):
    manifest = read_dataset(folder_dataset)
    a = stratified_split(manifest, 0.2, 0.2, seed=0)
    b = stratified_split(manifest, 0.2, 0.2, seed=1)
    assert not a.equals(b)


def test_official_protocol_keeps_test(car_ims_dataset):
    manifest = read_dataset(car_ims_dataset)
    split = stratified_split(manifest, val=0.5, protocol="official")
    merged = apply_split(manifest, split, "s")
    assert (merged[merged.orig_split == "test"].split == "test").all()
    assert set(merged[merged.orig_split == "train"].split) <= {"train", "val"}


def test_bad_split_value_names_line(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("path,class_id,split\na.jpg,1,train\nb.jpg,1,holdout\n")
    with pytest.raises(DataError, match=r"s\.csv:3: split 'holdout'"):
        read_split_file(str(path))


@pytest.mark.shared_data
def test_split_reproduces_benchmark_class_balance(shared_data, tmp_path):
    out = tmp_path / "split.csv"
    proc = run_pipeline("split.py", "--root-dir", str(shared_data / "cropped_train"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    ours = pd.read_csv(out).groupby(["class_id", "split"]).size()
    reference = pd.read_csv(shared_data / "split.csv").groupby(["class_id", "split"]).size()
    assert ours.equals(reference)
