"""Cropping on Ray Data: sizes equal the clamped boxes, faults reported, good items kept, re-runs skip."""

import json
import os

import pandas as pd
import pytest
from PIL import Image

from cars_ray.data.crop import crop_dataset
from cars_ray.data.layouts import read_dataset
from cars_ray.data.images import clamp_box
from helpers.data import CLASS_NAMES, make_image, run_pipeline, write_names_csv
from helpers.entry_points import call_pipeline


def test_each_layout_crops_to_clamped_boxes(ray_local, devkit_dataset, car_ims_dataset, kaggle_dataset, csv_dataset, tmp_path):
    for index, root in enumerate((devkit_dataset, car_ims_dataset, kaggle_dataset, csv_dataset)):
        manifest = read_dataset(root)
        out = tmp_path / f"out{index}"
        report = crop_dataset(manifest, str(out), margin=0.1)
        assert report["written"] == len(manifest.table), report
        readback = read_dataset(out)
        assert readback.layout == "folder" and readback.class_names == CLASS_NAMES
        labelled = manifest.table[manifest.table.class_index >= 0]
        assert len(readback.table) == len(labelled)
        crops = pd.read_csv(out / "crops.csv")
        for row in manifest.table.itertuples():
            with Image.open(row.path) as original:
                expected = clamp_box((row.x1, row.y1, row.x2, row.y2), original.width, original.height, 0.1)
            matches = [p for p in out.rglob(f"*{os.path.splitext(os.path.basename(row.path))[0]}.jpg")
                       if (row.orig_split in p.name or manifest.table.orig_split.nunique() == 1)]
            with Image.open(matches[0]) as crop:
                assert crop.size == (expected[2] - expected[0], expected[3] - expected[1])
        assert set(crops.split) == set(labelled.orig_split)


def test_faults_are_reported_and_good_items_produced(ray_local, tmp_path):
    root = tmp_path / "faulty"
    good = [f"g{i}.jpg" for i in range(3)]
    for name in good:
        make_image(root / name, (100, 80), seed=len(name))
    make_image(root / "trunc.jpg", (200, 150), seed=9)
    data = (root / "trunc.jpg").read_bytes()
    (root / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (root / "zero.jpg").write_bytes(b"")
    make_image(root / "alpha.png", (100, 80), mode="RGBA")
    make_image(root / "cmyk.jpg", (100, 80), mode="CMYK")
    write_names_csv(root / "names.csv")
    rows = ["path,label,x1,y1,x2,y2"] + [f"{n},1,10,10,60,50" for n in good] + [
        "trunc.jpg,1,10,10,60,50", "zero.jpg,1,10,10,60,50", "missing.jpg,1,10,10,60,50",
        "alpha.png,2,10,10,60,50", "cmyk.jpg,2,10,10,60,50",
        "g0.jpg,3,60,50,10,10",      # inverted box
        "g1.jpg,3,50,40,500,400",    # past the border: clamped, still produced
        "g2.jpg,17,10,10,60,50",     # unknown class id
    ]
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    manifest = read_dataset(root / "m.csv")
    report = crop_dataset(manifest, str(tmp_path / "out"))
    reasons = {os.path.basename(item["path"]) + ":" + item["reason"].split(":")[0] for item in report["skipped_items"]}
    assert {"trunc.jpg:truncated", "zero.jpg:unreadable", "missing.jpg:missing", "g2.jpg:unknown class id 17"} <= reasons
    assert any(r.startswith("g0.jpg:bad box") for r in reasons)
    out = tmp_path / "out"
    for produced in ("alpha.jpg", "cmyk.jpg"):
        with Image.open(next(out.rglob(produced))) as image:
            assert image.mode == "RGB"
    assert report["written"] == 6  # three good, alpha, cmyk, clamped box
    assert report["clamped"] == 1 and [(os.path.basename(i["path"]), i["reason"]) for i in report["clamped_items"]] == [
        ("g1.jpg", "box clamped: (50,40,500,400) on 100x80 in the stored frame reaches past the image; cropped to 50x40")]
    assert not list(out.rglob("*.tmp-*")), "no temporary file is left behind"


def test_rerun_skips_and_overwrite_redoes(ray_local, folder_dataset, tmp_path):
    manifest = read_dataset(folder_dataset)
    first = crop_dataset(manifest, str(tmp_path / "o"))
    second = crop_dataset(manifest, str(tmp_path / "o"))
    third = crop_dataset(manifest, str(tmp_path / "o"), overwrite=True)
    assert first["written"] == 24 and second["already_present"] == 24 and third["written"] == 24


def test_crop_pipeline_cli_and_errors(folder_dataset, tmp_path):
    out = tmp_path / "cli"
    proc = run_pipeline("crop.py", "--root-dir", str(folder_dataset), "--output-dir", str(out),
                        "--num-cpus", "2", "--show-classes", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "crop_report.json").read_text())
    assert report["written"] == 24 and (out / "samples.png").exists()
    code, _, stderr = call_pipeline("crop.py", "--root-dir", str(tmp_path / "nope"), "--output-dir", str(out))
    assert code == 2
    assert stderr.strip().splitlines()[-1].startswith("error: dataset root") and "Traceback" not in stderr
    assert "exit codes" in call_pipeline("crop.py", "--help")[1]


def test_inspect_data_reports_problems(tmp_path, csv_dataset, ray_local):
    make_image(csv_dataset.parent / "imgs" / "x.jpg", (50, 50))
    (csv_dataset.parent / "imgs" / "empty.jpg").write_bytes(b"")
    with open(csv_dataset, "a") as handle:
        handle.write("imgs/x.jpg,Beta SUV 2007,10,10,90,40,train\nimgs/empty.jpg,Beta SUV 2007,1,1,5,5,train\n")
    out = tmp_path / "inspect"
    code, _, stderr = call_pipeline("inspect_data.py", "--root-dir", str(csv_dataset), "--output-dir", str(out),
                                    "--show-classes", "3")
    assert code == 0, stderr[-2000:]
    report = json.loads((out / "inspect.json").read_text())
    assert report["num_classes"] == 4 and report["num_images"] == 10
    reasons = {os.path.basename(p["path"]): p["reason"] for p in report["problems"]}
    assert reasons["x.jpg"].startswith("box outside the image")
    assert reasons["empty.jpg"].startswith("unreadable")
    assert (out / "samples.png").stat().st_size > 1000


@pytest.mark.shared_data
def test_inspect_shared_cropped_train(shared_data, tmp_path, ray_local):
    code, _, stderr = call_pipeline("inspect_data.py", "--root-dir", str(shared_data / "cropped_train"),
                                    "--output-dir", str(tmp_path), "--show-classes", "6")
    assert code == 0, stderr[-2000:]
    report = json.loads((tmp_path / "inspect.json").read_text())
    assert report["num_classes"] == 196 and report["num_images"] == 8144 and not report["problems"]
