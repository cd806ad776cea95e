"""Crop every annotated image to its box, in parallel over the Ray cluster's CPUs (Ray Data).

The output reads back as the ``folder`` layout: ``<out>/<class folder>/<file>``, plus
``names.csv`` (class ids kept) and ``crops.csv`` (a ``csv``-layout manifest that keeps each
image's original split). Writes are atomic, re-runs skip finished files, and every item that
is not written is listed with its reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from cars_ray.data.images import clamp_box, open_rgb
from cars_ray.data.manifest import Manifest, folder_name
from cars_ray.errors import ImageError

JPEG_QUALITY = 95
UNLABELLED_FOLDER = "_unlabelled"
BLOCKS_PER_CPU = 4  # enough blocks to balance load and show progress, few enough to keep task overhead low


def plan_outputs(manifest: Manifest, output_dir: str) -> pd.DataFrame:
    """One task row per image: source path, box, and where its crop goes."""
    table = manifest.table.copy()
    several_splits = table.orig_split.nunique() > 1
    folders = [
        folder_name(manifest.class_names[i]) if i >= 0 else UNLABELLED_FOLDER for i in table.class_index
    ]
    names = [
        f"{split}_{Path(p).stem}.jpg" if several_splits and split else f"{Path(p).stem}.jpg"
        for p, split in zip(table.path, table.orig_split)
    ]
    table["out_rel"] = [f"{folder}/{name}" for folder, name in zip(folders, names)]
    table["out_path"] = [os.path.join(output_dir, rel) for rel in table.out_rel]
    table["row_id"] = range(len(table))  # the same file may be listed twice (e.g. two boxes)
    return table


def crop_one(row: dict, margin: float, overwrite: bool) -> tuple[str, str]:
    """Crop one image; returns (status, reason) with status written, exists or skipped."""
    out_path = row["out_path"]
    if not overwrite and os.path.exists(out_path):
        return "exists", ""
    try:
        image = open_rgb(row["path"])
        if not np.isnan(row["x1"]):
            box = (row["x1"], row["y1"], row["x2"], row["y2"])
            image = image.crop(clamp_box(box, image.width, image.height, margin))
    except ImageError as err:
        return "skipped", str(err)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp_path = f"{out_path}.tmp-{os.getpid()}"
    try:
        image.save(tmp_path, format="JPEG", quality=JPEG_QUALITY)
        os.replace(tmp_path, out_path)  # atomic: a crash never leaves a partial crop behind
    except OSError as err:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        return "skipped", f"write failed: {err}"
    return "written", ""


def crop_batch(batch: pd.DataFrame, margin: float, overwrite: bool) -> pd.DataFrame:
    results = [crop_one(row, margin, overwrite) for row in batch.to_dict("records")]
    return pd.DataFrame({
        "row_id": batch["row_id"].to_numpy(), "out_rel": batch["out_rel"].to_numpy(),
        "status": [status for status, _ in results], "reason": [reason for _, reason in results],
    })


def crop_dataset(manifest: Manifest, output_dir: str, margin: float = 0.0, overwrite: bool = False) -> dict:
    """Crop all images of ``manifest`` into ``output_dir`` with Ray Data; returns the report."""
    if margin < 0:
        raise ValueError("margin must be >= 0")
    os.makedirs(output_dir, exist_ok=True)
    tasks = plan_outputs(manifest, output_dir)
    columns = ["row_id", "path", "x1", "y1", "x2", "y2", "out_rel", "out_path"]
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    rows_per_block = int(np.clip(np.ceil(len(tasks) / (BLOCKS_PER_CPU * cpus)), 16, 512))
    chunks = [tasks[columns].iloc[i:i + rows_per_block] for i in range(0, len(tasks), rows_per_block)]
    if chunks:
        results = (
            ray.data.from_pandas(chunks)
            .map_batches(crop_batch, batch_format="pandas", batch_size=None,
                         fn_kwargs={"margin": margin, "overwrite": overwrite})
            .to_pandas()
        )
    else:
        results = pd.DataFrame(columns=["row_id", "out_rel", "status", "reason"])
    results = tasks[["row_id", "path", "class_index", "orig_split"]].merge(results, on="row_id", how="left")
    write_index_files(manifest, results, output_dir)
    return crop_report(manifest, results, output_dir, margin)


def write_index_files(manifest: Manifest, results: pd.DataFrame, output_dir: str) -> None:
    """names.csv and crops.csv beside the crops, so they read back with the same class ids."""
    names = pd.DataFrame({"class_id": range(1, manifest.num_classes + 1), "class_name": manifest.class_names})
    _atomic_csv(names, os.path.join(output_dir, "names.csv"))
    done = results[results.status.isin(["written", "exists"]) & (results.class_index >= 0)]
    crops = pd.DataFrame({"path": done.out_rel, "class_id": done.class_index + 1, "split": done.orig_split})
    _atomic_csv(crops.sort_values("path"), os.path.join(output_dir, "crops.csv"))


def _atomic_csv(frame: pd.DataFrame, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def crop_report(manifest: Manifest, results: pd.DataFrame, output_dir: str, margin: float) -> dict:
    counts = results.status.value_counts()
    skipped = results[results.status == "skipped"]
    return {
        "output_dir": os.path.abspath(output_dir),
        "layout": manifest.layout,
        "margin": margin,
        "num_images": int(len(results)),
        "written": int(counts.get("written", 0)),
        "already_present": int(counts.get("exists", 0)),
        "skipped": int(counts.get("skipped", 0)),
        "skipped_items": [
            {"path": p, "reason": r} for p, r in zip(skipped.path, skipped.reason)
        ] + [{"path": p["path"], "reason": p["reason"]} for p in manifest.problems],
        "reading_problems": len(manifest.problems),
    }
