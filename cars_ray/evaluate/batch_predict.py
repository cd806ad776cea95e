"""Offline batch prediction over files, folders and globs with Ray Data (an actor pool holds the model)."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pandas as pd

from cars_ray.checkpoint import CheckpointMeta
from cars_ray.data.blocks import dataset_from_frame
from cars_ray.data.files import IMAGE_SUFFIXES, ignored_reason, is_image_name, printable
from cars_ray.data.layouts import resolve_root
from cars_ray.errors import DataError, ImageError
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


def decode_for_prediction(batch: pd.DataFrame, preprocessing: Preprocessing) -> dict[str, np.ndarray]:
    images, errors = [], []
    size = preprocessing.resize
    for path in batch["path"]:
        try:
            images.append(preprocessing.decode(path))
            errors.append("")
        except ImageError as err:
            images.append(np.zeros((size, size, 3), np.uint8))
            errors.append(str(err))
    return {"path": batch["path"].to_numpy(), "image": np.stack(images), "error": np.asarray(errors, dtype=object)}


def predict_files(model_path: str, paths: list[str], topk: int | None = None, tta: bool = False,
                  meta: CheckpointMeta | None = None) -> pd.DataFrame:
    """One row per input: top-1 class and probability, the top-k (default 5) as JSON, or the error.
    ``meta``: the model's when the caller has read it (else read here). Raises DataError for a bad ``topk``."""
    meta = meta or describe(model_path)
    class_names, preprocessing = meta.class_names, meta.preprocessing
    topk = min(5, len(class_names)) if topk is None else topk
    if not 1 <= topk <= len(class_names):
        raise DataError(f"--topk must be from 1 to {len(class_names)}, got {topk}")
    # Ray's workers need not share the driver's working folder: they read absolute paths, and the rows
    # come back under the paths as the user gave them.
    given = {os.path.abspath(p): p for p in paths}
    paths = list(given)
    if paths:
        check_shared_input(paths[0], "the input")
    decoded = dataset_from_frame(pd.DataFrame({"path": paths}), ROWS_PER_BLOCK).map_batches(
        decode_for_prediction, batch_format="pandas", batch_size=32, fn_kwargs={"preprocessing": preprocessing})
    rows = []
    for batch in scored_batches(decoded, model_path, meta, len(paths), tta):
        for path, error, probs in zip(batch["path"], batch["error"], batch["probs"]):
            order = np.argsort(-probs)[:topk]
            rows.append({
                "path": given[path],
                "class_id": int(order[0]) + 1 if not error else None,
                "class_name": class_names[order[0]] if not error else "",
                "probability": float(probs[order[0]]) if not error else None,
                "topk": json.dumps([{"class_id": int(i) + 1, "class_name": class_names[i],
                                     "probability": round(float(probs[i]), 6)} for i in order]) if not error else "",
                "error": error,
            })
    order = {given[p]: i for i, p in enumerate(paths)}
    frame = pd.DataFrame(rows).sort_values("path", key=lambda s: s.map(order)).reset_index(drop=True)
    return frame.astype({"class_id": "Int64"})  # whole numbers; empty for unreadable inputs
