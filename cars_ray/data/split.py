"""Seeded, per-class stratified train/val/test splits, and reading split files back.

A split file has exactly the columns of the benchmark protocol file: ``path,class_id,split``
with ``path`` relative to the image root and ``class_id`` 1-based.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from cars_ray.data.layouts import read_dataset
from cars_ray.data.manifest import Manifest
from cars_ray.errors import DataError
from cars_ray.outputs import write_csv

SPLITS = ("train", "val", "test")
CROPS_INDEX = "crops.csv"  # what crop.py writes beside its crops: path,class_id,split with the original split
PROTOCOLS = ("random", "official")


def stratified_split(manifest: Manifest, val: float = 0.1, test: float = 0.2, seed: int = 0,
                     protocol: str = "random") -> pd.DataFrame:
    """Assign every labelled image to train/val/test, per class, reproducibly.

    ``random``: per class, round(n*test) test and round(n*val) validation images.
    ``official``: the dataset's own test images stay test; round(n*val) of each class's
    official training images become validation.
    Every class with an image that may train keeps at least one training row: where the rounded
    parts would take them all, validation gives way first, then test (:func:`allocate`).
    :func:`split_warnings` names the classes a requested part could not reach.
    Returns a frame ``path`` (str, relative), ``class_id`` (int, 1-based), ``split`` (str), sorted by path.
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown split protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"split fractions val={val} test={test} must be >= 0 and sum to less than 1")
    if protocol == "official":
        manifest = with_original_splits(manifest)
    table = manifest.table[manifest.table.class_index >= 0]
    if protocol == "official" and not (table.orig_split == "test").any():
        raise DataError(f"the {manifest.layout} dataset at {manifest.root} has no labelled official test images "
                        f"(a crop.py output keeps them in its {CROPS_INDEX}, absent here); use --protocol random")
    parts = []
    for class_index, group in table.groupby("class_index", sort=True):
        group = group.sort_values("rel_path")
        rng = np.random.default_rng([seed, int(class_index)])
        if protocol == "official":
            official_test = group[group.orig_split == "test"]
            pool = group[group.orig_split != "test"]
            n_test = 0
        else:
            official_test, pool = group.iloc[:0], group
            n_test = int(np.round(len(pool) * test))
        order = pool.iloc[rng.permutation(len(pool))]
        n_test, n_val = allocate(len(pool), n_test, int(np.round(len(pool) * val)))
        labels = ["test"] * n_test + ["val"] * n_val + ["train"] * (len(pool) - n_test - n_val)
        parts.append(pd.DataFrame({"path": order.rel_path, "class_id": class_index + 1, "split": labels}))
        if len(official_test):
            parts.append(pd.DataFrame({"path": official_test.rel_path, "class_id": class_index + 1, "split": "test"}))
    if not parts:
        raise DataError(f"the dataset at {manifest.root} has no labelled images to split")
    return pd.concat(parts).sort_values("path", kind="stable").reset_index(drop=True)


def with_original_splits(manifest: Manifest) -> Manifest:
    """A crop.py output read as the ``folder`` layout has lost each image's original split; its
    ``crops.csv`` (a ``csv`` manifest with the same relative paths and class ids) keeps it. Any other
    manifest is returned as it is."""
    index = os.path.join(manifest.root, CROPS_INDEX)
    if manifest.layout != "folder" or (manifest.table.orig_split != "").any() or not os.path.isfile(index):
        return manifest
    return read_dataset(index, "csv")


def allocate(size: int, n_test: int, n_val: int) -> tuple[int, int]:
    """(test, val) rows of a class of ``size`` images that may train, leaving at least one training row:
    validation gives way first (it only picks the epoch), then test."""
    spare = max(size - 1, 0)
    n_val = min(n_val, max(spare - n_test, 0))
    return min(n_test, spare), n_val


def split_of(table: pd.DataFrame) -> pd.DataFrame:
    """The split file of a table with ``rel_path``, ``class_index`` and ``split`` columns (what a run
    trained, selected and tested on), in split.py's format and order."""
    split = pd.DataFrame({"path": table.rel_path, "class_id": table.class_index + 1, "split": table.split})
    return split.sort_values("path", kind="stable").reset_index(drop=True)


def write_split(split: pd.DataFrame, path: str) -> None:
    """Write a split file atomically and byte-identically for identical input (LF line ends, fixed order)."""
    write_csv(path, split[["path", "class_id", "split"]])


def split_warnings(split: pd.DataFrame, class_names: list[str], val: float, test: float | None,
                   shown: int = 10) -> list[str]:
    """One sentence per part some classes got no row of, naming them and their image counts: a
    requested part (``val`` > 0; ``test`` > 0, or None for the official protocol's own test images)
    that a class is too small for, and training rows a class could not get (only official test images)."""
    warnings = []
    sizes = split.groupby("class_id").size()
    requested = [("train", "training", True), ("val", "validation", val > 0),
                 ("test", "test", test is not None and test > 0)]
    for part, word, asked in requested:
        if not asked:
            continue
        missing = sorted(set(sizes.index) - set(split.loc[split.split == part, "class_id"]))
        if missing:
            names = ", ".join(f"{class_names[c - 1]} ({sizes[c]} images)" for c in missing[:shown])
            more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
            why = "no image outside the official test set" if part == "train" else "too few images"
            warnings.append(f"{len(missing)} class(es) get no {word} rows, {why}: {names}{more}")
    return warnings


def read_split_file(path: str) -> pd.DataFrame:
    """Read and validate a ``path,class_id,split`` file."""
    try:
        split = pd.read_csv(path, dtype={"path": str, "split": str})
    except FileNotFoundError:
        raise DataError(f"split file {path} does not exist") from None
    except Exception as err:
        raise DataError(f"split file {path} is not a readable CSV ({err})") from None
    missing = {"path", "class_id", "split"} - set(split.columns)
    if missing:
        raise DataError(f"split file {path}: header lacks column(s) {', '.join(sorted(missing))}")
    bad = ~split.split.isin(SPLITS)
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2
        raise DataError(f"{path}:{line}: split {split.split[bad].iloc[0]!r} is not one of train, val, test")
    return split


def apply_split(manifest: Manifest, split: pd.DataFrame, source: str) -> pd.DataFrame:
    """The manifest's labelled rows with a ``split`` column taken from a split table."""
    table = manifest.table[manifest.table.class_index >= 0]
    merged = table.merge(split[["path", "class_id", "split"]].rename(columns={"path": "rel_path"}),
                         on="rel_path", how="inner")
    if merged.empty:
        raise DataError(f"no image of {manifest.root} is named in split file {source} "
                        f"(paths there must be relative to {manifest.root})")
    disagree = merged.class_id != merged.class_index + 1
    if disagree.any():
        row = merged[disagree].iloc[0]
        raise DataError(f"split file {source}: {row.rel_path} has class_id {row.class_id} but the dataset "
                        f"labels it {row.class_index + 1}")
    return merged.drop(columns=["class_id"])
