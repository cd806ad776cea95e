"""The streaming data path: each epoch's images decoded, cropped and flipped by Ray Data tasks, streamed to the workers.

Nothing holds a split: the driver puts the split's manifest rows (paths, boxes, labels; a few hundred bytes
each) in the object store once, and each training worker builds, per epoch, a Ray Dataset of ITS rows of THAT
epoch, derived from ``(train.seed, epoch, rank, world_size)`` alone:

- the epoch's order is :func:`cars_ray.data.feed.epoch_order` (a permutation of the manifest rows, the same one
  the cached path uses) and rank r takes the r-th equal slice (:func:`~cars_ray.data.feed.rank_rows`), so only
  paths are shuffled (no data moves) and the first batches mix the classes as the cached path's do;
- Ray Data tasks on any CPU of the cluster (CPU-only nodes included) read each file, apply its EXIF
  orientation, crop it to its box grown by ``data.box_margin`` and resize it (:meth:`Preprocessing.decode`, the
  decode every path shares), then draw a random resized crop to ``data.image_size`` and a flip from the cached
  path's crop distribution (``augment.crop_boxes``; seeded per row from ``(seed, epoch, row_id)``, so an epoch's
  augmentation repeats too); the worker's device
  then does what is cheap in batches: colour jitter, RandAugment, mixup (``TrainAugment(host_geometry=True)``);
- with ``data.stream_source: disk`` the tasks read each row's record from the split's records folder, decoded
  once per run by that same decode (``cars_ray.data.records``), instead of the file: the same images, so the
  same batches;
- the dataset keeps block order (``preserve_order``) and its object-store use is capped
  (``resource_limits.object_store_memory``), so Ray Data's backpressure holds a bounded window of decoded
  batches whatever the split's size.

Why a dataset per (epoch, rank) built in the worker rather than Ray Train's dataset shards: a shard
(``streaming_split``) hands rows to whichever rank asks first, so neither the order nor the rows a rank sees
are a function of the seed, and its ranks may end an epoch with different row counts (one short batch stalls
DDP). Building the epoch from ``(seed, epoch)`` makes a restarted worker or a ``--resume`` at epoch k redo
exactly epoch k's order, and lets every rank know its step count before the epoch starts.

Equal full batches on every rank: each rank streams exactly ``steps * batch_size`` rows of its slice followed by
a small reserve (the rows that follow its slice in the epoch's order, at least one batch). An unreadable image
is dropped by the decode task; the reserve fills its place, the rank still yields ``steps`` full batches, and
the worker names the skipped files (:attr:`StreamedSplit.skipped`). More unreadable images than the reserve
holds end the run with one sentence.

Validation streams too (rank r decodes rows r, r + world_size, ...; no augmentation): it is a tenth of the
training rows, so decoding it each epoch costs about a tenth of an epoch's decode, and it keeps memory flat.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pandas as pd
import ray
import torch

from cars_ray.data.blocks import dataset_from_frame
from cars_ray.data.feed import epoch_order, rank_rows
from cars_ray.data.loading import ROWS_PER_BLOCK, decode_batch
from cars_ray.data.records import read_records
from cars_ray.errors import DataError
from cars_ray.preprocessing import Preprocessing

RESERVE_SHARE = 0.01  # reserve rows per rank and epoch, as a share of its rows (at least one batch)
WINDOW_BATCHES = 8  # decoded training batches the object store may hold per stream (backpressure)
MIN_WINDOW_BYTES = 64 * 1024**2


def train_stream_positions(num_rows: int, seed: int, epoch: int, rank: int, world_size: int,
                           batch_size: int) -> tuple[np.ndarray, int]:
    """(positions in the split to stream, rows needed): rank ``rank``'s ``steps * batch_size`` rows of epoch
    ``epoch``'s order, then a reserve of the rows that follow its slice in that order (wrapping around; with one
    worker the reserve repeats the epoch's first rows, which are streamed only when an image is unreadable)."""
    order = epoch_order(num_rows, seed, epoch)
    share = rank_rows(order, rank, world_size)
    needed = len(share) // batch_size * batch_size
    reserve = max(batch_size, math.ceil(RESERVE_SHARE * needed))
    after = order[((rank + 1) * len(share) + np.arange(reserve)) % num_rows]
    return np.concatenate([share[:needed], after]), needed


def random_geometry(images: np.ndarray, row_ids: np.ndarray, size: int, scale_min: float, hflip: float,
                    seed: int, epoch: int) -> np.ndarray:
    """The training random resized crop (area in [scale_min, 1], ratio in [3/4, 4/3]: the cached path's
    :func:`~cars_ray.data.augment.crop_boxes`) to ``size`` and a horizontal flip with probability ``hflip``, for
    uint8 (N, R, R, 3) images; each row's five draws come from ``(seed, epoch, row_id)`` alone, so an epoch's
    augmentation repeats. Returns uint8 (N, size, size, 3).

    Each crop is Pillow's bilinear resize of the box (``Image.resize(box=...)``, sub-pixel and anti-aliased), at a
    third of the CPU of the cached path's :func:`~cars_ray.data.augment.resized_crops` (roi_align on float batches:
    0.4-0.6 against 1.2-1.5 ms per 128 px image in a decode task, measured on the 2-core machine). Against it on
    the same boxes: within one grey level where the crop is enlarged (the CPU parity recipe: mean 0.16, max 1), a
    mean of 0.7 where it is shrunk (decoded at 256, trained at 128), as their anti-aliasing filters differ."""
    from PIL import Image

    from cars_ray.data.augment import LOG_RATIO, crop_boxes

    out = np.empty((len(images), size, size, 3), np.uint8)
    if not len(images):
        return out
    draws = torch.from_numpy(np.stack([np.random.default_rng([seed, epoch, int(row_id)]).random(5)
                                       for row_id in row_ids]).astype(np.float32))
    boxes = crop_boxes(*draws[:, :4].unbind(1), images.shape[1], images.shape[2], (scale_min, 1.0), LOG_RATIO)
    for index, (image, box) in enumerate(zip(images, boxes.tolist())):
        crop = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR, box=tuple(box)))
        out[index] = crop[:, ::-1] if draws[index, 4] < hflip else crop
    return out


def stream_batch(batch: pd.DataFrame, preprocessing: Preprocessing, geometry: dict | None,
                 records: str | None = None) -> dict[str, np.ndarray]:
    """A Ray Data task's work: decode a block of manifest rows (:func:`decode_batch`), or read their decoded
    records from the folder ``records`` (:func:`~cars_ray.data.records.read_records`), unreadable ones dropped
    either way, and, for training (``geometry``: size, scale_min, hflip, seed, epoch), crop and flip each image."""
    decoded = decode_batch(batch, preprocessing) if records is None else read_records(batch, records)
    images = decoded["image"]
    if geometry is not None:
        images = random_geometry(images, decoded["row_id"], **geometry)
    return {"image": images, "label": decoded["label"], "row_id": decoded["row_id"]}


class StreamedSplit:
    """One split as a training worker streams it: the same epoch interface as ``CachedSplit``.

    ``rows``: the split's manifest rows (columns path, rel_path, class_index, x1, y1, x2, y2, row_id with row_id
    0..N-1). ``records``: the split's decoded records folder (``data.stream_source=disk``,
    ``cars_ray.data.records``), read instead of decoding the files; None decodes them every epoch. Batches are
    uint8 images (B, S, S, 3) (S = image_size for training with augmentation, the decode size otherwise) and
    int64 labels (B,), on ``device``; both sources give the same batches.
    """

    def __init__(self, rows: pd.DataFrame, preprocessing: Preprocessing, augment: str = "standard",
                 scale_min: float = 0.25, hflip: float = 0.5, decode_batch_size: int = 32, records: str | None = None):
        self.rows = rows.reset_index(drop=True)
        self.preprocessing, self.augment = preprocessing, augment
        self.scale_min, self.hflip, self.decode_batch_size = scale_min, hflip, decode_batch_size
        self.records = records
        self.skipped: list[str] = []  # the files found unreadable in the last pass

    def __len__(self) -> int:
        return len(self.rows)

    def steps_per_epoch(self, batch_size: int, world_size: int) -> int:
        return len(self) // world_size // batch_size

    def dataset(self, positions: np.ndarray, geometry: dict | None, batch_size: int) -> ray.data.Dataset:
        """A lazy, order-keeping dataset decoding the rows at ``positions``, with a capped object-store window."""
        side = geometry["size"] if geometry else self.preprocessing.resize
        dataset = dataset_from_frame(self.rows.iloc[positions], ROWS_PER_BLOCK).map_batches(
            stream_batch, batch_format="pandas", batch_size=self.decode_batch_size,
            fn_kwargs={"preprocessing": self.preprocessing, "geometry": geometry, "records": self.records})
        context = dataset.context  # this dataset's own copy of the DataContext
        context.execution_options.preserve_order = True
        window = max(MIN_WINDOW_BYTES, WINDOW_BATCHES * batch_size * side * side * 3)
        context.execution_options.resource_limits = context.execution_options.resource_limits.copy(
            object_store_memory=window)
        context.enable_progress_bars = False
        return dataset

    def train_batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int,
                      device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Exactly ``steps_per_epoch`` full batches of this rank's slice of epoch ``epoch``'s order."""
        positions, needed = train_stream_positions(len(self), seed, epoch, rank, world_size, batch_size)
        geometry = None if self.augment == "none" else {
            "size": self.preprocessing.image_size, "scale_min": self.scale_min, "hflip": self.hflip,
            "seed": seed, "epoch": epoch}
        steps, delivered = needed // batch_size, []
        batches = self.dataset(positions, geometry, batch_size).iter_batches(
            batch_size=batch_size, batch_format="numpy", drop_last=True, prefetch_batches=2)
        try:
            for batch in batches if steps else ():
                delivered.append(batch["row_id"])
                yield to_device(batch, device)
                if len(delivered) == steps:
                    break  # the reserve is not waited for
        finally:  # also when the consumer stops early (train.max_steps_per_epoch closes this generator)
            getattr(batches, "close", lambda: None)()  # stop the stream's tasks at once, not when collected
            self.skipped = self.missing(positions, delivered)
        if len(delivered) < steps:
            raise DataError(f"epoch {epoch}, rank {rank}: {len(self.skipped)} unreadable training images "
                            f"(e.g. {', '.join(self.skipped[:3])}) exceed the reserve of {len(positions) - needed} "
                            "rows; remove them from the manifest (inspect_data.py lists them)")

    def eval_batches(self, rank: int, world_size: int, batch_size: int,
                     device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every readable row exactly once across the ranks (rank r takes rows r, r + world_size, ...)."""
        positions, delivered = np.arange(rank, len(self), world_size), []
        for batch in self.dataset(positions, None, batch_size).iter_batches(
                batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
            delivered.append(batch["row_id"])
            yield to_device(batch, device)
        self.skipped = self.missing(positions, delivered)

    def missing(self, positions: np.ndarray, delivered: list[np.ndarray]) -> list[str]:
        """Relative paths of the streamed rows, up to the last one delivered, that never arrived (unreadable).
        The stream keeps its order, so the delivered row ids are the streamed ones with the lost ones left out."""
        streamed = self.rows.row_id.to_numpy()[positions]
        got = np.concatenate(delivered) if delivered else np.zeros(0, np.int64)
        lost, matched = [], 0
        for row_id in streamed:
            if matched == len(got):
                break
            if row_id == got[matched]:
                matched += 1
            else:
                lost.append(row_id)
        if not len(got):
            lost = list(streamed)
        return sorted(self.rows.rel_path.to_numpy()[np.asarray(lost, np.int64)].tolist())


def to_device(batch: dict[str, np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, int64 labels) on ``device``; pinned host copies on a GPU so the copy overlaps the step."""
    images, labels = torch.from_numpy(batch["image"]), torch.from_numpy(batch["label"].astype(np.int64))
    if device.type == "cuda":
        return images.pin_memory().to(device, non_blocking=True), labels.pin_memory().to(device, non_blocking=True)
    return images, labels
