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


def small_classes(root):
    """Four classes of 2, 3, 5 and 5 images (Zeta, Alpha, Ram, Beta in class-id order)."""
    from helpers.data import write_class_folders

    write_class_folders(root, 5, (24, 16))
    for folder, keep in (("Zeta Coupe 2012", 2), ("Alpha Sedan 2010", 3)):
        for extra in sorted((root / folder).iterdir())[keep:]:
            extra.unlink()
    return root


@pytest.mark.parametrize("fractions, counts, warnings", [
    (["--val", "0.1"], {"Zeta Coupe 2012": (2, 0, 0), "Alpha Sedan 2010": (2, 0, 1),
                        "Ram C/V Cargo Van Minivan 2012": (4, 0, 1), "Beta SUV 2007": (4, 0, 1)},
     ["warning: 4 class(es) get no validation rows, too few images: Zeta Coupe 2012 (2 images), Alpha Sedan 2010 "
      "(3 images), Ram C/V Cargo Van Minivan 2012 (5 images), Beta SUV 2007 (5 images)",
      "warning: 1 class(es) get no test rows, too few images: Zeta Coupe 2012 (2 images)"]),
    (["--val", "0.3", "--test", "0.3"], {"Zeta Coupe 2012": (1, 0, 1), "Alpha Sedan 2010": (1, 1, 1),
                                         "Ram C/V Cargo Van Minivan 2012": (1, 2, 2), "Beta SUV 2007": (1, 2, 2)},
     ["warning: 1 class(es) get no validation rows, too few images: Zeta Coupe 2012 (2 images)"]),
])
def test_small_classes_keep_a_training_row_and_are_named(tmp_path, fractions, counts, warnings):
    from helpers.entry_points import call_pipeline

    root = small_classes(tmp_path / "small")
    code, stdout, stderr = call_pipeline("split.py", "--root-dir", str(root), "--out", str(tmp_path / "s.csv"), *fractions)
    assert code == 0, stderr
    assert [line for line in stdout.splitlines() if line.startswith("warning:")] == warnings
    split = pd.read_csv(tmp_path / "s.csv")
    names = read_dataset(root).class_names
    got = {names[c - 1]: tuple(int((rows.split == part).sum()) for part in ("train", "val", "test"))
           for c, rows in split.groupby("class_id")}
    assert got == counts
    assert len(split) == 15  # no image dropped


def test_official_protocol_names_a_class_with_only_test_images():
    from cars_ray.data.manifest import Manifest, make_table
    from cars_ray.data.split import split_warnings

    rows = [{"path": f"/d/{i}.jpg", "rel_path": f"{i}.jpg", "class_index": i // 3, "orig_split": "test" if i >= 3 or i == 0 else "train"}
            for i in range(6)]
    manifest = Manifest(make_table(rows), ["A", "B"], "csv", "/d")
    split = stratified_split(manifest, val=0.5, protocol="official")
    assert split.groupby(["class_id", "split"]).size().to_dict() == {
        (1, "test"): 1, (1, "train"): 1, (1, "val"): 1, (2, "test"): 3}
    assert split_warnings(split, manifest.class_names, 0.5, None) == [
        "1 class(es) get no training rows, no image outside the official test set: B (3 images)",
        "1 class(es) get no validation rows, too few images: B (3 images)"]


def test_official_protocol_on_a_crop_output_reads_its_crops_csv(tmp_path):
    """crop.py's output reads back as the folder layout, without original splits; crops.csv keeps them."""
    from helpers.data import write_class_folders
    from helpers.entry_points import call_pipeline

    root = write_class_folders(tmp_path / "crops", 4, (24, 16))
    images = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    official = {path: "test" if path.endswith("_003.jpg") else "train" for path in images}
    names = read_dataset(root).class_names
    by_folder = {name.replace("/", "-"): i + 1 for i, name in enumerate(names)}
    (root / "crops.csv").write_text("path,class_id,split\n" + "".join(
        f"{path},{by_folder[path.split('/')[0]]},{official[path]}\n" for path in images))
    code, stdout, stderr = call_pipeline("split.py", "--root-dir", str(root), "--out", str(tmp_path / "s.csv"),
                                         "--protocol", "official", "--val", "0.34")
    assert code == 0, stderr
    split = pd.read_csv(tmp_path / "s.csv")
    assert sorted(split.loc[split.split == "test", "path"]) == sorted(p for p in images if official[p] == "test")
    assert split.split.value_counts().to_dict() == {"train": 8, "test": 4, "val": 4}

    (root / "crops.csv").unlink()
    code, _, stderr = call_pipeline("split.py", "--root-dir", str(root), "--out", str(tmp_path / "s2.csv"),
                                    "--protocol", "official")
    assert code == 2 and "keeps them in its crops.csv, absent here); use --protocol random" in stderr.strip().splitlines()[-1]


def test_an_existing_split_file_is_replaced_only_with_overwrite(tmp_path):
    """split.py, predict.py, export.py and compare.py write one file each (outputs.check_earlier_file)."""
    from helpers.entry_points import call_pipeline

    root, out = small_classes(tmp_path / "small"), tmp_path / "s.csv"
    assert call_pipeline("split.py", "--root-dir", str(root), "--out", str(out))[0] == 0
    code, _, stderr = call_pipeline("split.py", "--root-dir", str(root), "--out", str(out))
    assert code == 2 and stderr.strip().splitlines()[-1] == f"error: --out {out} already exists; replace it with --overwrite"
    assert call_pipeline("split.py", "--root-dir", str(root), "--out", str(out), "--overwrite")[0] == 0
