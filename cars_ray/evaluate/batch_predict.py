"""Offline batch prediction over files, folders and globs with Ray Data (an actor pool holds the model)."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pandas as pd

from cars_ray.data.blocks import dataset_from_frame
from cars_ray.data.layouts import IMAGE_SUFFIXES, resolve_root
from cars_ray.errors import DataError, ImageError
from cars_ray.evaluate.predictor import backend_info, scored_batches
from cars_ray.preprocessing import Preprocessing
from cars_ray.storage import check_shared_input

ROWS_PER_BLOCK = 64


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files as given, folders walked for images (``demo``: the packaged sample), globs expanded; order
    kept, duplicates dropped. Raises DataError when nothing is found."""
    paths: list[str] = []
    for item in map(resolve_root, inputs):
        if os.path.isdir(item):
            for folder, _, files in sorted(os.walk(item)):
                paths += [os.path.join(folder, f) for f in sorted(files) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
        elif any(ch in item for ch in "*?["):
            paths += sorted(glob.glob(item, recursive=True))
        else:
            paths.append(item)  # a missing file becomes a row with an error, not a crash
    seen = set()
    unique = [p for p in paths if not (p in seen or seen.add(p))]
    if not unique:
        raise DataError(f"no images found in {', '.join(inputs)}")
    return unique


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


def predict_files(model_path: str, paths: list[str], topk: int | None = None, tta: bool = False) -> pd.DataFrame:
    """One row per input: top-1 class and probability, the top-k (default 5) as JSON, or the error."""
    class_names, preprocessing = backend_info(model_path)
    topk = min(5, len(class_names)) if topk is None else topk
    if not 1 <= topk <= len(class_names):
        raise DataError(f"--topk must be from 1 to {len(class_names)}, got {topk}")
    if paths:
        check_shared_input(paths[0], "the input")
    decoded = dataset_from_frame(pd.DataFrame({"path": paths}), ROWS_PER_BLOCK).map_batches(
        decode_for_prediction, batch_format="pandas", batch_size=32, fn_kwargs={"preprocessing": preprocessing})
    rows = []
    for batch in scored_batches(decoded, model_path, len(paths), tta):
        for path, error, probs in zip(batch["path"], batch["error"], batch["probs"]):
            order = np.argsort(-probs)[:topk]
            rows.append({
                "path": path,
                "class_id": int(order[0]) + 1 if not error else None,
                "class_name": class_names[order[0]] if not error else "",
                "probability": float(probs[order[0]]) if not error else None,
                "topk": json.dumps([{"class_id": int(i) + 1, "class_name": class_names[i],
                                     "probability": round(float(probs[i]), 6)} for i in order]) if not error else "",
                "error": error,
            })
    order = {p: i for i, p in enumerate(paths)}
    frame = pd.DataFrame(rows).sort_values("path", key=lambda s: s.map(order)).reset_index(drop=True)
    return frame.astype({"class_id": "Int64"})  # whole numbers; empty for unreadable inputs
