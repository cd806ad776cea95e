"""Seeded, per-class stratified train/val/test splits, and reading split files back.

A split file has exactly the columns of the benchmark protocol file: ``path,class_id,split``
with ``path`` relative to the image root and ``class_id`` 1-based.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd

from cars_ray.data.files import content_hash, duplicate_groups, normalise_rel_path
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
    # One image listed with several boxes is one unit: all its rows share the split of its path (a photo in
    # train and in test would leak), and the split file lists the path once.
    table = manifest.table[manifest.table.class_index >= 0].drop_duplicates(["rel_path", "class_index"])
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
    """Read and validate a ``path,class_id,split`` file; paths come back normalised (``\\`` is a
    separator, ``./a.jpg`` is ``a.jpg``).

    Raises DataError naming the path and both lines when a path is listed twice (in two splits, or
    the same row repeated): an image scored as test must never be a training image too.
    """
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
    split["path"] = [normalise_rel_path(p) if isinstance(p, str) else p for p in split.path]
    repeated = split.path.duplicated(keep=False)
    if repeated.any():
        first = split.path[repeated].iloc[0]
        lines = [int(i) + 2 for i in np.flatnonzero(split.path.to_numpy() == first)]  # line 1 is the header
        where = split.split[split.path == first].tolist()
        what = "in two splits" if len(set(where)) > 1 else "twice"
        raise DataError(f"{path}:{lines[0]} and {path}:{lines[1]}: {first} is listed {what} ({where[0]}, {where[1]}); "
                        "a split file lists each image once")
    return split


def unmatched_split_paths(split: pd.DataFrame, rel_paths) -> list[str]:
    """The paths of a read split table (normalised by :func:`read_split_file`) that name none of ``rel_paths``,
    sorted: every reader of a split file counts and names them, never passes over them."""
    return sorted(set(split.path) - set(rel_paths))


def apply_split(manifest: Manifest, split: pd.DataFrame, source: str) -> pd.DataFrame:
    """The manifest's labelled rows with a ``split`` column taken from a split table."""
    table = manifest.table[manifest.table.class_index >= 0]
    merged = table.merge(split[["path", "class_id", "split"]].rename(columns={"path": "rel_path"}),
                         on="rel_path", how="inner")
    if merged.empty:
        raise DataError(f"no image of {manifest.root} is named in split file {source} "
                        f"(paths there must be relative to {manifest.root})")
    unmatched = unmatched_split_paths(split, table.rel_path)
    if len(unmatched) * 2 > len(split):
        raise DataError(f"{len(unmatched)} of the {len(split)} rows of split file {source} name no labelled image of "
                        f"{manifest.root}, the first {unmatched[0]} (paths there must be relative to {manifest.root})")
    if unmatched:  # counted and named: a split row is never dropped unsaid
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        print(f"warning: {len(unmatched)} row(s) of split file {source} name no labelled image of {manifest.root} "
              f"and are not used: {', '.join(unmatched[:5])}{more}")
    disagree = merged.class_id != merged.class_index + 1
    if disagree.any():
        row = merged[disagree].iloc[0]
        raise DataError(f"split file {source}: {row.rel_path} has class_id {row.class_id} but the dataset "
                        f"labels it {row.class_index + 1}")
    return merged.drop(columns=["class_id"])


def exact_duplicates(manifest: Manifest) -> list[list[str]]:
    """Groups of ``rel_path`` (sorted) of the labelled images whose bytes are identical (SHA-256)."""
    table = manifest.table[manifest.table.class_index >= 0]
    hashes = [content_hash(p) if os.path.isfile(p) else "" for p in table.path]
    return duplicate_groups(table.rel_path, hashes)


def drop_duplicates(manifest: Manifest, groups: list[list[str]]) -> tuple[Manifest, list[str]]:
    """The manifest without the second and later copy of each group (the first by path is kept), and the
    dropped ``rel_path`` values, for the caller to count and name."""
    dropped = [path for group in groups for path in group[1:]]
    table = manifest.table[~manifest.table.rel_path.isin(dropped)].reset_index(drop=True)
    return dataclasses.replace(manifest, table=table), dropped


def keep_copies_together(split: pd.DataFrame, groups: list[list[str]]) -> tuple[pd.DataFrame, int]:
    """Put every copy of an image in the split of its first copy (by path): (new split table, rows moved).

    A copy moved into a split swaps places with the first (by path) image of its own class in that
    split that has no copy, so every class keeps its per-split counts; where no such image exists the
    copy just moves. Deterministic: the same split and groups give the same result.
    """
    split = split.copy()
    position = {path: i for i, path in enumerate(split.path)}
    in_group = {path for group in groups for path in group}
    moved = 0
    for group in groups:
        members = [position[p] for p in group if p in position]
        if len(members) < 2:
            continue
        target = split.split.iat[members[0]]
        for row in members[1:]:
            old = split.split.iat[row]
            if old == target:
                continue
            partners = split.index[(split.class_id == split.class_id.iat[row]) & (split.split == target)
                                   & ~split.path.isin(in_group)]
            if len(partners):
                split.loc[partners[0], "split"] = old
            split.iat[row, split.columns.get_loc("split")] = target
            moved += 1
    return split, moved
