"""Data order: every epoch visits the training rows in a fresh seeded order over the whole split.

The failure this guards against: a manifest sorted by class, cut into blocks in that order and
mixed only by a 1,024-row local buffer, made every epoch sweep the classes in the same order
(the first batches held only the first classes); 196-class training then reached 8.8% top-1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cars_ray.data.feed import CachedSplit, epoch_order, rank_rows

CLASSES, PER_CLASS, BATCH = 100, 30, 32  # 3,000 rows: more than the old 1,024-row buffer held
CPU = torch.device("cpu")


def sorted_split() -> CachedSplit:
    """Rows in class order, as a sorted manifest gives them; each image's first pixel holds its row number."""
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    images = torch.zeros(len(labels), 2, 2, 3, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(len(labels)) % 256
    images[:, 0, 0, 1] = torch.arange(len(labels)) // 256
    return CachedSplit(images, labels)


def first_labels(split: CachedSplit, seed: int, epoch: int, batches: int = 4, rank: int = 0, world: int = 1) -> np.ndarray:
    iterator = split.train_batches(seed, epoch, rank, world, BATCH, CPU)
    return torch.cat([next(iterator)[1] for _ in range(batches)]).numpy()


def row_numbers(split: CachedSplit, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    rows = [images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()
            for images, _ in split.train_batches(seed, epoch, rank, world, BATCH, CPU)]
    return torch.cat(rows).numpy()


def test_first_batches_mix_all_classes():
    """The first 128 rows of an epoch draw on all classes: about half from the upper half of the classes.
    (The old order gave 0%: its first batches came from the first ~35 classes only.)"""
    split = sorted_split()
    for epoch in (1, 2, 3):
        labels = first_labels(split, seed=0, epoch=epoch)
        upper_share = float((labels >= CLASSES // 2).mean())
        assert 0.35 <= upper_share <= 0.65, (epoch, upper_share)
        assert len(set(labels.tolist())) >= 50, "128 rows over 100 classes touch most of them"
        assert abs(labels.mean() - (CLASSES - 1) / 2) < 10


def test_epochs_differ_and_reruns_repeat():
    split = sorted_split()
    one, two = row_numbers(split, seed=0, epoch=1), row_numbers(split, seed=0, epoch=2)
    assert len(one) == len(two) == (CLASSES * PER_CLASS // BATCH) * BATCH
    assert not np.array_equal(one, two), "two epochs differ in order"
    assert np.array_equal(one, row_numbers(sorted_split(), seed=0, epoch=1)), "a re-run with the same seed repeats it"
    assert not np.array_equal(one, row_numbers(split, seed=1, epoch=1)), "another seed, another order"
    assert len(set(one.tolist())) == len(one), "no row twice in an epoch"


def test_workers_take_disjoint_equal_shares_of_each_epoch():
    split = sorted_split()
    shares = [row_numbers(split, seed=0, epoch=3, rank=rank, world=3) for rank in range(3)]
    assert len({len(share) for share in shares}) == 1, "every rank runs the same number of steps"
    assert not set(shares[0]) & set(shares[1]) and not set(shares[1]) & set(shares[2])
    whole = epoch_order(len(split), 0, 3)
    assert np.array_equal(np.concatenate([rank_rows(whole, r, 3) for r in range(3)]), whole[:len(whole) // 3 * 3])
    labels = first_labels(split, seed=0, epoch=3, rank=2, world=3)
    assert 0.35 <= float((labels >= CLASSES // 2).mean()) <= 0.65


def test_eval_batches_cover_every_row_once_across_ranks():
    split = sorted_split()
    seen = torch.cat([labels for rank in range(2) for _, labels in split.eval_batches(rank, 2, 64, CPU)])
    assert sorted(seen.tolist()) == sorted(split.labels.tolist())


@pytest.mark.slow
def test_decoded_rows_reach_the_worker_cache_in_row_order(ray_local, tmp_path):
    """Through Ray Data as training uses it: decode in parallel blocks, then collect in row-id order,
    whichever block finished first."""
    from helpers.data import make_image
    from cars_ray.data.loading import decoded_dataset
    from cars_ray.preprocessing import Preprocessing

    rows = []
    for index in range(150):
        path = tmp_path / f"{index:03d}.jpg"
        make_image(path, (24, 20), (index % 200, 40, 40), seed=index)
        rows.append({"path": str(path), "rel_path": path.name, "class_index": index // 10,
                     "x1": np.nan, "y1": np.nan, "x2": np.nan, "y2": np.nan})
    preprocessing = Preprocessing(image_size=16, resize=16, crop_pct=1.0, mean=(0.5,) * 3, std=(0.5,) * 3)
    dataset = decoded_dataset(pd.DataFrame(rows), preprocessing, batch_size=8).drop_columns(["rel_path"]).materialize()
    split = CachedSplit.collect(dataset.iterator(), 150, CPU)
    assert len(split) == 150 and split.images.shape == (150, 16, 16, 3)
    assert split.labels.tolist() == [index // 10 for index in range(150)]
    labels = first_labels(split, seed=0, epoch=1, batches=2)
    assert len(set(labels.tolist())) >= 8, "the epoch's first batches mix the 15 classes"
