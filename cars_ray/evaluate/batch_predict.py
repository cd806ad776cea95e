"""Offline batch prediction over files, folders, globs or a box manifest with Ray Data (an actor pool holds the model)."""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os

import numpy as np
import pandas as pd

from cars_ray.checkpoint import CheckpointMeta
from cars_ray.data.blocks import dataset_from_frame
from cars_ray.data.files import IMAGE_SUFFIXES, ignored_reason, is_image_name, normalise_rel_path, printable
from cars_ray.data.images import BOX_FIELDS, parse_box
from cars_ray.data.layouts import resolve_root
from cars_ray.errors import BoxError, DataError, ImageError
from cars_ray.evaluate.predictor import scored_batches
from cars_ray.inference.model import describe
from cars_ray.preprocessing import Preprocessing
from cars_ray.storage import check_shared_input

ROWS_PER_BLOCK = 64


def expand_inputs(inputs: list[str]) -> list[str]:
    """Paths to predict from ``--input`` items (``demo``: the packaged sample); order kept, duplicates dropped.

    An item that exists is taken literally, before any glob expansion (``car [1].jpg``, ``a*.jpg``
    as real names); a folder is walked for images (:data:`~cars_ray.data.files.IMAGE_SUFFIXES`, any
    case; junk and dot-folders skipped, as every folder scan does); an item that does not exist but
    has glob characters is expanded; anything else, or a glob matching nothing, is kept as given so
    it becomes a row with an error, never a silent drop. Names that are not valid UTF-8 cannot be
    carried through Arrow or the CSV output: they are left out, counted and named on the console.
    Raises DataError when nothing is left.
    """
    paths: list[str] = []
    skipped: list[str] = []  # folder entries that are not images or are junk: counted and named below
    for item in map(resolve_root, inputs):
        if os.path.isdir(item):
            for folder, subfolders, files in os.walk(item):
                skipped += [os.path.join(folder, d) for d in sorted(subfolders) if ignored_reason(d)]
                subfolders[:] = sorted(d for d in subfolders if not ignored_reason(d))
                for name in sorted(files):
                    usable = is_image_name(name) and not ignored_reason(name)
                    (paths if usable else skipped).append(os.path.join(folder, name))
        elif not os.path.exists(item) and glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            paths += matches or [item]  # a glob matching nothing becomes an error row naming it
        else:
            paths.append(item)  # a file (whatever characters its name has), or a missing one: an error row
    if skipped:
        print(f"note: {len(skipped)} folder entr(ies) skipped (junk, hidden, or not one of {' '.join(IMAGE_SUFFIXES)}): "
              + ", ".join(printable(p) for p in skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
    seen = set()  # one file given twice (a.jpg and ./a.jpg) is predicted once, under its first spelling
    unique = [p for p in paths if not (os.path.abspath(p) in seen or seen.add(os.path.abspath(p)))]
    unusable = [p for p in unique if not _utf8(p)]
    if unusable:
        print(f"warning: {len(unusable)} input(s) left out, their names are not valid UTF-8: "
              + ", ".join(printable(p) for p in unusable[:10]) + (" ..." if len(unusable) > 10 else ""))
        unique = [p for p in unique if _utf8(p)]
    if not unique:
        raise DataError(f"no images found in {', '.join(printable(i) for i in inputs)}")
    return unique


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def read_box_manifest(path: str) -> tuple[list[str], list[tuple[float, float, float, float] | None]]:
    """The photos of a box manifest and the box of each, in file order: a CSV whose header names ``path``, ``x1``,
    ``y1``, ``x2``, ``y2`` (other columns ignored); paths relative to the CSV's folder (``/`` or ``\\``); a row
    whose four box cells are empty is the whole photo. A photo may appear on several rows (several cars).

    Raises DataError, one sentence naming the file, line and field, for a missing header column, an empty path,
    a box with some cells empty, or a box that is not four finite numbers with x2 > x1 and y2 > y1; every bad
    row is counted, the first named in full and the others by line (nothing is dropped unsaid)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            lines = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"box manifest {path} cannot be read ({err})") from None
    header = [cell.strip().lower() for cell in lines[0]] if lines else []
    missing = [name for name in ("path", *BOX_FIELDS) if name not in header]
    if missing:
        raise DataError(f"{path}:1: the header must name path,x1,y1,x2,y2; it lacks {', '.join(missing)}")
    column = {name: header.index(name) for name in ("path", *BOX_FIELDS)}
    folder = os.path.dirname(os.path.abspath(path))
    paths, boxes, bad = [], [], []
    for line_no, cells in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue  # a blank line is no row
        cell = {name: cells[i].strip() if i < len(cells) else "" for name, i in column.items()}
        where = f"{path}:{line_no}"
        box_cells = [cell[name] for name in BOX_FIELDS]
        try:
            if not cell["path"]:
                raise BoxError(f"{where}: path is empty")
            if any(box_cells) and not all(box_cells):
                empty = next(name for name in BOX_FIELDS if not cell[name])
                raise BoxError(f"{where}: {empty} is empty; give all four of x1,y1,x2,y2, or none for the whole photo")
            boxes.append(parse_box(box_cells, where) if any(box_cells) else None)
        except BoxError as err:
            bad.append((line_no, str(err)))
            continue
        paths.append(os.path.join(folder, normalise_rel_path(cell["path"])))
    if bad:
        others = f"; the other bad line(s): {', '.join(str(n) for n, _ in bad[1:11])}" + (" ..." if len(bad) > 11 else "")
        raise DataError(f"{len(bad)} bad row(s) in the box manifest: {bad[0][1]}{others if len(bad) > 1 else ''}")
    if not paths:
        raise DataError(f"box manifest {path} lists no photos")
    return paths, boxes


def decode_for_prediction(batch: pd.DataFrame, preprocessing: Preprocessing) -> dict[str, np.ndarray]:
    """Decode each row's photo (cropped to its box, as training crops, when x1..y2 are set) to uint8
    (resize, resize, 3); ``error`` says why a row could not be used, ``box`` is the crop taken ("left,top,right,bottom"
    on the upright photo, "" for the whole photo)."""
    images, errors, crops = [], [], []
    size = preprocessing.resize
    for row in batch.to_dict("records"):
        box = None if np.isnan(row["x1"]) else tuple(float(row[name]) for name in BOX_FIELDS)
        try:
            image, crop = preprocessing.decode_crop(row["path"], box)
            images.append(image)
            errors.append("")
            crops.append(",".join(map(str, crop)) if crop else "")
        except ImageError as err:
            images.append(np.zeros((size, size, 3), np.uint8))
            errors.append(str(err))
            crops.append("")
    return {"row_id": batch["row_id"].to_numpy(), "path": batch["path"].to_numpy(), "image": np.stack(images),
            "error": np.asarray(errors, dtype=object), "box": np.asarray(crops, dtype=object)}


def predict_files(model_path: str, paths: list[str], topk: int | None = None, tta: bool = False,
                  meta: CheckpointMeta | None = None,
                  boxes: list[tuple[float, float, float, float] | None] | None = None,
                  box_frame: str | None = None) -> pd.DataFrame:
    """One row per input, in input order: top-1 class and probability, the top-k (default 5) as JSON, the
    crop classified (``box``: "left,top,right,bottom" in pixels of the upright photo, the given box grown by
    the model's box_margin and clamped; "" for the whole photo), or the error.

    ``meta``: the model's when the caller has read it (else read here). ``boxes``: one per path (None: the
    whole photo), read in ``box_frame`` (default: the frame the model was trained with); a path may repeat
    with other boxes. Raises DataError for a bad ``topk``."""
    meta = meta or describe(model_path)
    class_names, preprocessing = meta.class_names, meta.preprocessing
    if box_frame:
        preprocessing = dataclasses.replace(preprocessing, box_frame=box_frame)
    topk = min(5, len(class_names)) if topk is None else topk
    if not 1 <= topk <= len(class_names):
        raise DataError(f"--topk must be from 1 to {len(class_names)}, got {topk}")
    boxes = boxes or [None] * len(paths)
    # Ray's workers need not share the driver's working folder: they read absolute paths, and the rows
    # come back under the paths as the user gave them.
    if paths:
        check_shared_input(os.path.abspath(paths[0]), "the input")
    cells = np.array([box if box is not None else (np.nan,) * 4 for box in boxes], dtype=np.float64).reshape(-1, 4)
    table = pd.DataFrame({"row_id": np.arange(len(paths)), "path": [os.path.abspath(p) for p in paths],
                          **{name: cells[:, i] for i, name in enumerate(BOX_FIELDS)}})
    decoded = dataset_from_frame(table, ROWS_PER_BLOCK).map_batches(
        decode_for_prediction, batch_format="pandas", batch_size=32, fn_kwargs={"preprocessing": preprocessing})
    rows = []
    for batch in scored_batches(decoded, model_path, meta, len(paths), tta):
        for row_id, error, crop, probs in zip(batch["row_id"], batch["error"], batch["box"], batch["probs"]):
            order = np.argsort(-probs)[:topk]
            rows.append({
                "row_id": int(row_id),
                "path": paths[row_id],
                "class_id": int(order[0]) + 1 if not error else None,
                "class_name": class_names[order[0]] if not error else "",
                "probability": float(probs[order[0]]) if not error else None,
                "topk": json.dumps([{"class_id": int(i) + 1, "class_name": class_names[i],
                                     "probability": round(float(probs[i]), 6)} for i in order]) if not error else "",
                "box": crop,
                "error": error,
            })
    frame = pd.DataFrame(rows).sort_values("row_id").drop(columns="row_id").reset_index(drop=True)
    return frame.astype({"class_id": "Int64"})  # whole numbers; empty for unreadable inputs
