"""From a data config to Ray Datasets of decoded images, one per split.

Each image is decoded, cropped to its box (when the layout has boxes) and resized once per run
to the compact ``resize`` x ``resize`` uint8 form the model's preprocessing asks for; training
workers then augment batches of it on their own device.
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np
import pandas as pd
import ray

from cars_ray.config import DEMO_ROOT, DataConfig
from cars_ray.data.images import load_array
from cars_ray.data.layouts import read_dataset
from cars_ray.data.manifest import Manifest
from cars_ray.data.split import apply_split, read_split_file, stratified_split
from cars_ray.errors import DataError, ImageError

ROWS_PER_BLOCK = 64


def resolve_root(root_dir: str) -> str:
    """``demo`` names the sample shipped inside the package; anything else is a path."""
    if root_dir == DEMO_ROOT:
        return str(resources.files("cars_ray").joinpath("data/demo/images"))
    return root_dir


def check_root_dir(cfg: DataConfig) -> str:
    """The resolved data root; a missing one fails before any Ray or torch start-up."""
    root = resolve_root(cfg.root_dir)
    if not os.path.exists(root):
        raise DataError(f"data.root_dir {root} does not exist")
    return root


def load_split_table(cfg: DataConfig) -> tuple[Manifest, pd.DataFrame]:
    """The dataset's manifest and its labelled rows with a ``split`` column (train/val/test)."""
    root = check_root_dir(cfg)
    manifest = read_dataset(root, cfg.layout)
    if cfg.split_file:
        table = apply_split(manifest, read_split_file(cfg.split_file), cfg.split_file)
    else:
        split = stratified_split(manifest, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
        table = apply_split(manifest, split, "the generated split")
    if cfg.max_images_per_class:
        table = (table.sort_values("rel_path").groupby(["split", "class_index"], group_keys=False)
                 .head(cfg.max_images_per_class).reset_index(drop=True))
    for name in ("train", "val"):
        if not (table.split == name).any():
            raise DataError(f"the split of {root} has no {name!r} images")
    return manifest, table


def decode_batch(batch: pd.DataFrame, size: int, margin: float) -> dict[str, np.ndarray]:
    """Decode a block of manifest rows to ``image`` (N, size, size, 3) uint8 and ``label``.

    Unreadable images are dropped here (they are listed by ``inspect_data`` and the crop report).
    """
    images, labels, paths = [], [], []
    for row in batch.to_dict("records"):
        box = None if np.isnan(row["x1"]) else (row["x1"], row["y1"], row["x2"], row["y2"])
        try:
            images.append(load_array(row["path"], box, size, margin))
        except ImageError:
            continue
        labels.append(row["class_index"])
        paths.append(row["rel_path"])
    return {
        "image": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        "label": np.asarray(labels, dtype=np.int64),
        "rel_path": np.asarray(paths, dtype=object),
    }


def decoded_dataset(rows: pd.DataFrame, size: int, margin: float = 0.0, batch_size: int = 32) -> ray.data.Dataset:
    """A lazy Ray Dataset decoding ``rows`` in parallel across the cluster's CPUs."""
    columns = ["path", "rel_path", "class_index", "x1", "y1", "x2", "y2"]
    rows = rows[columns].reset_index(drop=True)
    chunks = [rows.iloc[i:i + ROWS_PER_BLOCK] for i in range(0, len(rows), ROWS_PER_BLOCK)] or [rows]
    return ray.data.from_pandas(chunks).map_batches(
        decode_batch, batch_format="pandas", batch_size=batch_size,
        fn_kwargs={"size": size, "margin": margin},
    )


def build_training_datasets(table: pd.DataFrame, preprocessing: dict, cfg: DataConfig) -> dict[str, ray.data.Dataset]:
    """Train and val datasets, decoded once and held in Ray's object store for the whole run."""
    datasets = {}
    for name in ("train", "val"):
        rows = table[table.split == name]
        datasets[name] = decoded_dataset(rows, preprocessing["resize"], cfg.box_margin,
                                         cfg.decode_batch_size).drop_columns(["rel_path"]).materialize()
    return datasets
