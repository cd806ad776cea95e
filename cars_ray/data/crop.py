"""Crop every annotated image to its box, in parallel over the Ray cluster's CPUs (Ray Data).

The output reads back as the ``folder`` layout: ``<out>/<class folder>/<file>``, plus
``names.csv`` (class ids kept) and ``crops.csv`` (a ``csv``-layout manifest that keeps each
image's original split). The crops are made on any node's CPUs and written by the driver, so the
output folder only has to exist where the command runs. Writes are atomic, re-runs skip finished
files, and every item that is not written is listed with its reason.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from cars_ray.data.blocks import dataset_from_frame
from cars_ray.data.images import EXIF_NOTE, ORIENTATION, box_on_upright, open_rgb
from cars_ray.data.manifest import Manifest, folder_name
from cars_ray.errors import DataError, ImageError
from cars_ray.outputs import write_atomic, write_csv
from cars_ray.storage import check_shared_input

JPEG_QUALITY = 95
CROP_OUTPUTS = ("crop_report.json", "crops.csv")  # what marks a folder as an earlier crop's output
UNLABELLED_FOLDER = "_unlabelled"
BLOCKS_PER_CPU = 4  # enough blocks to balance load and show progress, few enough to keep task overhead low


def plan_outputs(manifest: Manifest, output_dir: str) -> pd.DataFrame:
    """One task row per image: source path, box, and where its crop goes."""
    table = manifest.table.copy()
    several_splits = table.orig_split.nunique() > 1
    folders = [
        folder_name(manifest.class_names[i]) if i >= 0 else UNLABELLED_FOLDER for i in table.class_index
    ]
    stems = [f"{split}_{Path(p).stem}" if several_splits and split else Path(p).stem
             for p, split in zip(table.path, table.orig_split)]
    table["out_rel"] = unique_names([f"{folder}/{stem}" for folder, stem in zip(folders, stems)],
                                    [Path(p).suffix for p in table.path], list(table.path))
    table["out_path"] = [os.path.join(output_dir, rel) for rel in table.out_rel]
    table["row_id"] = range(len(table))  # the same file may be listed twice (e.g. two boxes)
    return table


def unique_names(stems: list[str], suffixes: list[str], sources: list[str]) -> list[str]:
    """``<stem>.jpg`` per input row, made unique (case-insensitively, as some file systems compare names).

    The first row of a stem keeps ``<stem>.jpg`` (so an earlier crop's files are still found by
    --resume); another file with the same stem takes its own extension into the name (``car_png.jpg``
    beside ``car.jpg``); a file listed again (a second box) and any remaining clash take a counter
    (``car_2.jpg``).
    """
    taken: set[str] = set()
    seen_sources: set[str] = set()
    names = []
    for stem, suffix, source in zip(stems, suffixes, sources):
        candidates = [f"{stem}.jpg"] + ([f"{stem}_{suffix.lstrip('.').lower()}.jpg"] if source not in seen_sources else [])
        name = next((c for c in candidates if c.casefold() not in taken), None)
        counter = 2
        while name is None or name.casefold() in taken:
            name, counter = f"{stem}_{counter}.jpg", counter + 1
        taken.add(name.casefold())
        seen_sources.add(source)
        names.append(name)
    return names


def crop_one(row: dict, margin: float, box_frame: str = "stored") -> tuple[str, str, bytes, str]:
    """Crop one image and encode it as JPEG: (status, reason, bytes, clamp note), status ``cropped`` or
    ``skipped``. A cropped image's reason holds the decode's note, if any (an unreadable EXIF block). The
    box is read in ``box_frame`` (see :data:`cars_ray.data.images.BOX_FRAMES`), turned with the EXIF
    orientation the decode applied; the clamp note says how a box reaching past the image was clamped
    ("" when it was not)."""
    note = ""
    try:
        has_box = not np.isnan(row["x1"])
        image = open_rgb(row["path"])
        remark = image.info.get(EXIF_NOTE, "")
        if has_box:
            # The orientation the decode really applied (1 when its EXIF block was unreadable and ignored).
            orientation = image.info.get(ORIENTATION, 1) if box_frame == "stored" else 1
            box = (row["x1"], row["y1"], row["x2"], row["y2"])
            crop, clamped = box_on_upright(box, box_frame, orientation, image.width, image.height, margin)
            image, note = image.crop(crop), clamped or ""
    except ImageError as err:
        return "skipped", str(err), b"", ""
    encoded = io.BytesIO()
    image.save(encoded, format="JPEG", quality=JPEG_QUALITY)
    return "cropped", remark, encoded.getvalue(), note


def crop_batch(batch: pd.DataFrame, margin: float, box_frame: str = "stored") -> pd.DataFrame:
    results = [crop_one(row, margin, box_frame) for row in batch.to_dict("records")]
    return pd.DataFrame({
        "row_id": batch["row_id"].to_numpy(),
        "status": [r[0] for r in results], "reason": [r[1] for r in results],
        "jpeg": [r[2] for r in results], "clamped": [r[3] for r in results],
    })


def save_crop(path: str, encoded: bytes, note: str = "") -> tuple[str, str]:
    """Write one crop atomically (a crash never leaves a partial file): (status, reason); a written
    crop keeps ``note`` (``crop_one``'s notes) as its reason."""
    def dump(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(encoded)
    try:
        write_atomic(path, dump)
    except OSError as err:
        return "skipped", f"write failed: {err}"
    return "written", note


def crop_dataset(manifest: Manifest, output_dir: str, margin: float = 0.0, overwrite: bool = False,
                 box_frame: str = "stored") -> dict:
    """Crop all images of ``manifest`` into ``output_dir`` with Ray Data; returns the report.

    Boxes are read in ``box_frame`` ("stored" pixels, Stanford Cars' own, or "upright"); a box that reaches
    past its image is clamped, counted (``clamped``) and named (``clamped_items``) in the report.

    The crops are made wherever the cluster has CPUs, but written by this process (the driver):
    ``output_dir`` need not exist on the other nodes, and finished files are found here, once.
    """
    if not margin >= 0 or margin == float("inf"):
        raise ValueError(f"margin must be finite and >= 0, got {margin}")
    os.makedirs(output_dir, exist_ok=True)
    tasks = plan_outputs(manifest, output_dir)
    sources = {os.path.realpath(p) for p in tasks.path}
    clash = next((p for p in tasks.out_path if os.path.realpath(p) in sources), None)
    if clash:
        raise DataError(f"cropping into {output_dir} would overwrite the source image {clash}; choose another output folder")
    present = np.zeros(len(tasks), dtype=bool) if overwrite else tasks.out_path.map(os.path.exists).to_numpy(bool)
    outcomes = [pd.DataFrame({"row_id": tasks.row_id[present], "status": "exists", "reason": "", "clamped": ""})]
    todo = tasks[~present]
    if len(todo):
        check_shared_input(todo.path.iloc[0], "the image")  # Ray Data tasks read the sources on any node
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        rows_per_block = int(np.clip(np.ceil(len(todo) / (BLOCKS_PER_CPU * cpus)), 16, 512))
        out_paths = dict(zip(todo.row_id, todo.out_path))
        crops = dataset_from_frame(todo[["row_id", "path", "x1", "y1", "x2", "y2"]], rows_per_block).map_batches(
            crop_batch, batch_format="pandas", batch_size=None, fn_kwargs={"margin": margin, "box_frame": box_frame})
        for batch in crops.iter_batches(batch_format="pandas", batch_size=None):
            saved = [save_crop(out_paths[row_id], encoded, reason) if status == "cropped" else (status, reason)
                     for row_id, status, reason, encoded in zip(batch.row_id, batch.status, batch.reason, batch.jpeg)]
            outcomes.append(pd.DataFrame({"row_id": batch.row_id.to_numpy(), "status": [s for s, _ in saved],
                                          "reason": [r for _, r in saved], "clamped": batch.clamped.to_numpy()}))
    results = tasks[["row_id", "path", "out_rel", "class_index", "orig_split"]].merge(
        pd.concat(outcomes, ignore_index=True), on="row_id", how="left")
    write_index_files(manifest, results, output_dir)
    return crop_report(manifest, results, output_dir, margin, box_frame)


def write_index_files(manifest: Manifest, results: pd.DataFrame, output_dir: str) -> None:
    """names.csv and crops.csv beside the crops, so they read back with the same class ids."""
    names = pd.DataFrame({"class_id": range(1, manifest.num_classes + 1), "class_name": manifest.class_names})
    write_csv(os.path.join(output_dir, "names.csv"), names)
    done = results[results.status.isin(["written", "exists"]) & (results.class_index >= 0)]
    crops = pd.DataFrame({"path": done.out_rel, "class_id": done.class_index + 1, "split": done.orig_split})
    write_csv(os.path.join(output_dir, "crops.csv"), crops.sort_values("path"))


def crop_report(manifest: Manifest, results: pd.DataFrame, output_dir: str, margin: float,
                box_frame: str = "stored") -> dict:
    """The report: ``skipped`` counts every item of ``skipped_items`` (the images that could not be
    cropped, and the annotated rows not read: ``skipped_while_reading``); ``notes`` lists written crops
    with a remark (an EXIF block ignored); ``clamped`` the written crops whose box was clamped to the image;
    ``ignored`` the folder entries left out (junk, extensions)."""
    counts = results.status.value_counts()
    skipped = results[results.status == "skipped"]
    noted = results[(results.status == "written") & (results.reason.fillna("") != "")]
    clamped = results[(results.clamped.fillna("") != "") & (results.status == "written")]
    items = ([{"path": p, "reason": r} for p, r in zip(skipped.path, skipped.reason)]
             + [{"path": p["path"], "reason": p["reason"]} for p in manifest.problems])
    return {
        "output_dir": os.path.abspath(output_dir),
        "layout": manifest.layout,
        "margin": margin,
        "box_frame": box_frame,
        "num_images": int(len(results)),
        "written": int(counts.get("written", 0)),
        "already_present": int(counts.get("exists", 0)),
        "skipped": len(items),
        "skipped_while_cropping": int(len(skipped)),
        "skipped_while_reading": len(manifest.problems),
        "skipped_items": items,
        "notes": [{"path": p, "note": r} for p, r in zip(noted.path, noted.reason)],
        "ignored": len(manifest.ignored),
        "ignored_items": manifest.ignored,
        "reading_problems": len(manifest.problems),
        # Written crops whose box reached past the image and was clamped to it (crops made by an earlier
        # run and kept by --resume were reported by that run).
        "clamped": int(len(clamped)),
        "clamped_items": [{"path": p, "reason": r} for p, r in zip(clamped.path, clamped.clamped)],
    }
