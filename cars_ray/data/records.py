"""The streaming path's disk source (``data.stream_source: disk``): each image decoded once into a file of
fixed-size records on the run's storage, which every epoch's Ray Data tasks read instead of the JPEG.

FFCV and MosaicML Streaming feed this way; timm decodes every epoch (``data.stream_source: decode``). Which is
faster on the 2-core machine, and by how much: README "Data at scale" and docs/benchmarks.md.

Layout: ``<--output-dir>/decoded/<split>-<key>/`` holds

- ``images.npy``: uint8 (N, R, R, 3), R = ``Preprocessing.resize``, row ``i`` = the split's manifest row with
  ``row_id`` i, decoded by :meth:`Preprocessing.decode` (the decode every path shares); a numpy ``.npy`` file, so
  a reader maps it (``np.load(mmap_mode="r")``) and a block of rows is one fancy index into the page cache;
- ``readable.npy``: bool (N,), False for the images the decode found unreadable (their records stay zero).

``key`` is a digest of the split's manifest rows (path, label, box, row id, and each file's size and
modification time, so a replaced photo is decoded again) and of the preprocessing fields the decode reads.
A run (a ``--resume`` too) whose key matches reuses the folder; any other key writes a new one and removes
the old. The folder is written under a ``.partial-`` name and renamed when complete, so an interrupted write is
never reused (the next write removes it).

Only the driver writes (the decoded blocks arrive from Ray Data tasks as in the cached path, with Ray Data's
backpressure; memory stays one block window); on several nodes the readers are Ray Data tasks on any node, so
the folder lies under ``--output-dir``, which ``cars_ray.train.runner.check_cluster_paths`` already requires
every node to see (a shared mount). Reading goes through the OS page cache: no process holds the split.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from typing import Iterable

import numpy as np
import pandas as pd

from cars_ray.data.sizing import human_bytes
from cars_ray.errors import ConfigError
from cars_ray.preprocessing import Preprocessing

FORMAT_VERSION = 1  # part of the key: a change of the layout above never reads an old folder
RECORDS_FOLDER = "decoded"  # under the run's --output-dir
IMAGES_FILE, READABLE_FILE = "images.npy", "readable.npy"
PARTIAL = ".partial-"


def content_key(rows: pd.DataFrame, preprocessing: Preprocessing) -> str:
    """A 16-hex-digit digest of a split's manifest rows (``split_rows`` columns) with each file's size and
    modification time (-1 for a file that cannot be read), and of the decode's preprocessing fields."""
    digest = hashlib.sha256(json.dumps({"version": FORMAT_VERSION, "decode": preprocessing.decode_fields()},
                                       sort_keys=True).encode())
    columns = rows[["path", "class_index", "x1", "y1", "x2", "y2", "row_id"]]
    digest.update(columns.to_csv(index=False).encode())
    for path in rows.path:
        try:
            stat = os.stat(path)
            digest.update(f"{stat.st_size},{stat.st_mtime_ns};".encode())
        except OSError:
            digest.update(b"-1;")
    return digest.hexdigest()[:16]


def records_folder(output_dir: str, split: str, key: str) -> str:
    return os.path.join(os.path.abspath(output_dir), RECORDS_FOLDER, f"{split}-{key}")


def is_complete(folder: str) -> bool:
    """A folder the rename made (an interrupted write never has this name)."""
    return all(os.path.isfile(os.path.join(folder, name)) for name in (IMAGES_FILE, READABLE_FILE))


def check_space(folder: str, needed: int) -> None:
    """Raise ConfigError when the disk holding ``folder`` (made if missing) has fewer than ``needed`` bytes free."""
    os.makedirs(folder, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ConfigError(f"data.stream_source=disk: the decoded records need {human_bytes(needed)} ({needed} bytes) "
                          f"in {folder} but its disk has {human_bytes(free)} ({free} bytes) free; free space there, "
                          "give another --output-dir or set data.stream_source=decode")


def remove_other_records(parent: str, split: str, keep: str) -> None:
    """Remove the split's folders of other keys and its interrupted writes (one records folder per split)."""
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        path = os.path.join(parent, entry)
        if entry.startswith(f"{split}-") and path != keep:
            shutil.rmtree(path, ignore_errors=True)


def write_records(folder: str, num_rows: int, side: int, blocks: Iterable[dict[str, np.ndarray]]) -> np.ndarray:
    """Write a split's records into ``folder`` (made complete or not at all) from decoded ``blocks`` (``image`` uint8
    (n, side, side, 3) and ``row_id`` in [0, num_rows), in any order, as Ray Data's decode tasks finish).
    Returns the readable mask, bool (num_rows,): False for the rows no block held (unreadable images)."""
    staging = f"{folder}{PARTIAL}{secrets.token_hex(4)}"
    os.makedirs(staging)
    try:
        images = np.lib.format.open_memmap(os.path.join(staging, IMAGES_FILE), mode="w+", dtype=np.uint8,
                                           shape=(num_rows, side, side, 3))
        readable = np.zeros(num_rows, bool)
        for block in blocks:
            images[block["row_id"]] = block["image"]
            readable[block["row_id"]] = True
        images.flush()
        del images
        np.save(os.path.join(staging, READABLE_FILE), readable)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return readable


def read_readable(folder: str) -> np.ndarray:
    """The readable mask, bool (N,), of a complete records folder."""
    return np.load(os.path.join(folder, READABLE_FILE))


def read_records(batch: pd.DataFrame, folder: str) -> dict[str, np.ndarray]:
    """A Ray Data task's read: the records of a block of manifest rows (columns class_index, row_id), with the
    unreadable rows dropped as the decode drops them. Returns ``image`` uint8 (n, R, R, 3), ``label`` int64 (n,)
    and ``row_id`` int64 (n,) in the block's order."""
    row_ids = batch.row_id.to_numpy(np.int64)
    keep = np.load(os.path.join(folder, READABLE_FILE), mmap_mode="r")[row_ids]
    row_ids = row_ids[keep]
    images = np.load(os.path.join(folder, IMAGES_FILE), mmap_mode="r")
    return {"image": np.asarray(images[row_ids]), "label": batch.class_index.to_numpy(np.int64)[keep],
            "row_id": row_ids}
