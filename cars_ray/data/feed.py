"""What a training worker holds of the decoded images, and the order it visits them in.

Cached path (``data.pipeline``: ``cars_ray.data.sizing``): Ray Data decodes every image once per run into the
object store (``cars_ray.data.loading``). Each training worker pulls the split's blocks through its
``ray.train`` dataset iterator once, into one preallocated uint8 tensor filled at each row's id (so the order
does not depend on which decode task finished first), then moves it to its device when it fits there (else it
stays in pinned host memory). Every epoch then visits the rows in a fresh random order over the whole split
(the streaming path, ``cars_ray.data.stream``, streams the same orders):

- the order is a permutation drawn from ``(train.seed, epoch)`` alone, so a restarted worker or a
  ``--resume`` gets the same order for the epoch it redoes, and a re-run gets the same orders;
- with several workers, rank r takes the r-th of ``world_size`` equal slices of that permutation
  (``DistributedSampler`` semantics), so the ranks see disjoint rows and the same number of steps;
- no second decode and no per-batch Arrow conversion: a batch is one ``index_select``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

CACHE_FRACTION_OF_FREE_GPU = 0.4  # "auto" keeps the cache on the GPU when it takes at most this much of the free memory


def epoch_order(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of all rows that epoch ``epoch`` (1-based) visits, from the seed and epoch alone."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def rank_rows(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s equal share of an epoch's order (the remainder rows wait for the next epoch)."""
    share = len(order) // world_size
    return order[rank * share:(rank + 1) * share]


@dataclass
class CachedSplit:
    """A decoded split held by one worker: ``images`` uint8 (N, R, R, 3) and ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def collect(cls, shard, num_rows: int, device: torch.device, on_device: str = "auto") -> "CachedSplit":
        """Pull a ``ray.train`` dataset iterator (columns image uint8 (n, R, R, 3), label, row_id) once.

        ``num_rows`` is the split's manifest row count (row ids lie in [0, num_rows)). The worker holds ONE copy:
        a uint8 (num_rows, R, R, 3) tensor allocated at the first block (pinned when training on a GPU) and
        filled at each block's row ids as the blocks arrive, in whatever order the decode tasks finished.
        Rows the decode dropped (unreadable images) are closed up in place, keeping row-id order. Raises
        ValueError when the shard holds no rows.
        """
        images: np.ndarray | None = None
        host: torch.Tensor | None = None
        labels = np.zeros(num_rows, np.int64)
        filled = np.zeros(num_rows, bool)
        for block in shard.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            row_ids = block["row_id"]
            if images is None:
                host = torch.empty((num_rows, *block["image"].shape[1:]), dtype=torch.uint8,
                                   pin_memory=device.type == "cuda")
                images = host.numpy()  # a view: numpy's fancy assignment writes straight into the tensor
            images[row_ids] = block["image"]
            labels[row_ids], filled[row_ids] = block["label"], True
        kept = np.flatnonzero(filled)
        if host is None or not len(kept):
            raise ValueError("the dataset shard holds no rows")
        if len(kept) < num_rows:
            compact_rows(images, kept)
            host, labels = host[:len(kept)], labels[kept]
        target = torch.from_numpy(labels)
        if device.type == "cuda" and place_on_device(host.numel(), device, on_device):
            host, target = host.to(device), target.to(device)
        return cls(host, target)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def steps_per_epoch(self, batch_size: int, world_size: int) -> int:
        return len(self) // world_size // batch_size

    def train_batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int,
                      device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's full batches of epoch ``epoch`` in the epoch's order (the last partial batch dropped)."""
        rows = rank_rows(epoch_order(len(self), seed, epoch), rank, world_size)
        steps = len(rows) // batch_size
        index = torch.from_numpy(rows[:steps * batch_size].astype(np.int64)).to(self.images.device)
        for step in range(steps):
            yield self.batch(index[step * batch_size:(step + 1) * batch_size], device)

    def eval_batches(self, rank: int, world_size: int, batch_size: int,
                     device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every row exactly once across the ranks (rank r takes rows r, r + world_size, ...)."""
        index = torch.arange(rank, len(self), world_size, device=self.images.device)
        for start in range(0, len(index), batch_size):
            yield self.batch(index[start:start + batch_size], device)

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.images.index_select(0, index), self.labels.index_select(0, index)
        if images.device != device:  # host cache, GPU worker: pinned copies overlap with the running step
            images = images.pin_memory().to(device, non_blocking=True)
            labels = labels.pin_memory().to(device, non_blocking=True)
        return images, labels


def compact_rows(images: np.ndarray, kept: np.ndarray, chunk: int = 1024) -> None:
    """Move rows ``kept`` (ascending) to the front of ``images`` in place, in chunks: row kept[i] goes to i <= kept[i],
    so a chunk never overwrites a row a later chunk still reads."""
    for start in range(0, len(kept), chunk):
        rows = kept[start:start + chunk]
        images[start:start + len(rows)] = images[rows]


def place_on_device(num_bytes: int, device: torch.device, on_device: str) -> bool:
    """Whether the cache goes to the GPU: ``true``, ``false``, or ``auto`` (when it fits comfortably)."""
    if on_device in ("true", "false"):
        return on_device == "true"
    free, _ = torch.cuda.mem_get_info(device)
    return num_bytes <= CACHE_FRACTION_OF_FREE_GPU * free
