"""The two data paths: auto's choice on both sides of the budget, the cached path's one preallocated copy, and the
streaming path's per-epoch order, equal full batches per rank, unreadable images and bounded object store.

Training end to end in streaming mode (two workers, --resume): tests/test_train.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

from cars_ray.data.blocks import IdleStepBackoff, dataset_from_frame
from cars_ray.data.feed import CachedSplit, epoch_order, rank_rows
from cars_ray.data.sizing import OBJECT_STORE_SHARE, WORKER_MEMORY_SHARE, choose_pipeline, decoded_bytes
from cars_ray.data.stream import train_stream_positions
from cars_ray.errors import ConfigError
from cars_ray.preprocessing import Preprocessing
from helpers.data import REPO, make_image, ray_temp_dir

CPU = torch.device("cpu")
GB = 1e9


# ---------------------------------------------------------------- auto: both sides of the budget (no Ray)

def test_auto_picks_cached_within_the_budget_and_streaming_beyond_it():
    store, worker = 19.2 * GB, 24 * GB  # budget: min(50% of 19.2, 50% of 24) = 9.6 GB
    budget = min(OBJECT_STORE_SHARE * store, WORKER_MEMORY_SHARE * worker)
    assert budget == pytest.approx(9.6 * GB)
    small = choose_pipeline("auto", decoded_bytes(6_500, 224), store, worker)  # Stanford Cars at 224 px: 0.98 GB
    assert small.pipeline == "cached" and small.decoded_bytes == 6_500 * 224 * 224 * 3
    assert small.reason == "cached: 978.4 MB decoded <= 9.6 GB budget (50% of the object store's 19.2 GB)"
    large = choose_pipeline("auto", decoded_bytes(100_000, 384), store, worker)  # 44.2 GB
    assert large.pipeline == "streaming"
    assert large.reason == "streaming: 44.2 GB decoded > 9.6 GB budget (50% of the object store's 19.2 GB)"
    edge = int(budget) // (224 * 224 * 3)  # the largest count that fits, and one more
    assert choose_pipeline("auto", decoded_bytes(edge, 224), store, worker).pipeline == "cached"
    assert choose_pipeline("auto", decoded_bytes(edge + 1, 224), store, worker).pipeline == "streaming"


def test_a_workers_memory_can_be_the_smaller_budget():
    choice = choose_pipeline("auto", decoded_bytes(20_000, 224), 40 * GB, 4 * GB)  # 3.0 GB > 50% of 4 GB
    assert choice.pipeline == "streaming" and choice.budget_bytes == int(2 * GB)
    assert "50% of a training worker's 4.0 GB share of its node's memory" in choice.reason


def test_pipeline_set_by_hand_is_kept_and_says_so_but_an_impossible_cache_fails_in_one_sentence():
    assert choose_pipeline("streaming", 1000, GB, GB).reason.startswith("streaming: set by data.pipeline (")
    over_budget = choose_pipeline("cached", int(0.8 * GB), GB, 4 * GB)  # above the 50% budget, below capacity
    assert over_budget.pipeline == "cached" and over_budget.reason.startswith("cached: set by data.pipeline (")
    with pytest.raises(ConfigError, match=r"^data.pipeline=cached: the decoded train and val splits take 44.2 GB but "
                                          r"the object store holds 19.2 GB; set data.pipeline=streaming \(or auto\)$"):
        choose_pipeline("cached", decoded_bytes(100_000, 384), 19.2 * GB, 100 * GB)


def test_pipeline_key_is_checked():
    from cars_ray.config import load_config

    assert load_config(None).data.pipeline == "auto"
    assert load_config(None, ["data.pipeline=streaming"]).data.pipeline == "streaming"
    with pytest.raises(ConfigError, match="data.pipeline is 'stream'; expected one of auto, cached, streaming"):
        load_config(None, ["data.pipeline=stream"])


# ---------------------------------------------------------------- cached: one preallocated copy (no Ray)

class FakeShard:
    """What ``ray.train.get_dataset_shard`` gives: blocks of (image, label, row_id), here in a scrambled order."""

    def __init__(self, blocks):
        self.blocks = blocks

    def iter_batches(self, **_):
        yield from self.blocks


def block(row_ids) -> dict:
    row_ids = np.asarray(row_ids, np.int64)
    images = np.zeros((len(row_ids), 3, 3, 3), np.uint8)
    images[:, 0, 0, 0], images[:, 1, 1, 1] = row_ids % 256, row_ids // 256
    return {"image": images, "label": row_ids % 7, "row_id": row_ids}


def test_cached_split_fills_one_tensor_in_row_id_order_whatever_the_block_order():
    rows = np.arange(700)
    shuffled = np.random.default_rng(0).permutation(rows)
    split = CachedSplit.collect(FakeShard([block(part) for part in np.array_split(shuffled, 11)]), 700, CPU)
    assert split.images.shape == (700, 3, 3, 3) and split.images.dtype == torch.uint8
    assert np.array_equal(split.images[:, 0, 0, 0].numpy(), rows % 256)
    assert np.array_equal(split.images[:, 1, 1, 1].numpy(), rows // 256)
    assert np.array_equal(split.labels.numpy(), rows % 7)


def test_cached_split_closes_up_the_rows_the_decode_dropped():
    kept = np.setdiff1d(np.arange(3000), [0, 5, 1500, 2999])  # four unreadable images, first and last included
    shuffled = np.random.default_rng(1).permutation(kept)
    split = CachedSplit.collect(FakeShard([block(part) for part in np.array_split(shuffled, 7)]), 3000, CPU)
    assert len(split) == len(kept) == split.images.shape[0]
    numbers = split.images[:, 0, 0, 0].numpy().astype(int) + 256 * split.images[:, 1, 1, 1].numpy().astype(int)
    assert np.array_equal(numbers, kept) and np.array_equal(split.labels.numpy(), kept % 7)
    with pytest.raises(ValueError, match="holds no rows"):
        CachedSplit.collect(FakeShard([]), 10, CPU)


# ---------------------------------------------------------------- streaming: which rows, in which order (no Ray)

def test_stream_positions_repeat_per_seed_and_epoch_and_split_ranks_evenly():
    labels = np.arange(100).repeat(30)  # a manifest sorted by class
    one = train_stream_positions(len(labels), 0, 3, 0, 1, 32)
    assert np.array_equal(one[0], train_stream_positions(len(labels), 0, 3, 0, 1, 32)[0]), "a re-run repeats"
    assert not np.array_equal(one[0], train_stream_positions(len(labels), 0, 4, 0, 1, 32)[0]), "epochs differ"
    assert not np.array_equal(one[0], train_stream_positions(len(labels), 1, 3, 0, 1, 32)[0]), "seeds differ"
    assert one[1] == 3000 // 32 * 32
    assert np.array_equal(one[0][:one[1]], epoch_order(3000, 0, 3)[:one[1]]), "the cached path's order"
    first = labels[one[0][:128]]
    assert 0.35 <= float((first >= 50).mean()) <= 0.65 and len(set(first.tolist())) >= 50, "classes mixed"
    shares = [train_stream_positions(3000, 0, 3, rank, 3, 32) for rank in range(3)]
    assert {needed for _, needed in shares} == {1000 // 32 * 32}, "every rank: the same number of full batches"
    streamed = [set(positions[:needed].tolist()) for positions, needed in shares]
    assert not streamed[0] & streamed[1] and not streamed[1] & streamed[2], "disjoint slices"
    for rank, (positions, needed) in enumerate(shares):
        assert np.array_equal(positions[:needed], rank_rows(epoch_order(3000, 0, 3), rank, 3)[:needed])
        assert len(positions) - needed == 32, "a reserve of at least one batch"


# ---------------------------------------------------------------- streaming through Ray Data (the session's Ray)

def stream_rows(tmp_path, count: int, classes: int = 10, unreadable: tuple[int, ...] = ()) -> pd.DataFrame:
    rows = []
    for index in range(count):
        path = tmp_path / f"{index:04d}.jpg"
        if index in unreadable:
            path.write_bytes(b"not a jpeg")
        else:
            make_image(path, (24, 20), (index % 250, 40, 40), seed=index)
        rows.append({"path": str(path), "rel_path": path.name, "class_index": index * classes // count,
                     "x1": np.nan, "y1": np.nan, "x2": np.nan, "y2": np.nan, "row_id": index})
    return pd.DataFrame(rows)


PRE = Preprocessing(image_size=12, resize=16, crop_pct=0.75, mean=(0.5,) * 3, std=(0.5,) * 3)


def streamed_labels(split, seed, epoch, rank, world, batch) -> list[np.ndarray]:
    return [labels.numpy() for _, labels in split.train_batches(seed, epoch, rank, world, batch, CPU)]


@pytest.mark.slow
def test_streamed_epochs_repeat_give_equal_full_batches_and_name_unreadable_images(ray_local, tmp_path):
    from cars_ray.data.stream import StreamedSplit

    rows = stream_rows(tmp_path, 120, unreadable=(7, 64))
    split = StreamedSplit(rows, PRE, "light", scale_min=0.5, hflip=0.5, decode_batch_size=8)
    batches = list(split.train_batches(0, 1, 0, 2, 8, CPU))
    assert len(batches) == split.steps_per_epoch(8, 2) == 7, "60 rows per rank: 7 full batches of 8"
    assert all(images.shape == (8, 12, 12, 3) and images.dtype == torch.uint8 for images, _ in batches)
    again = list(split.train_batches(0, 1, 0, 2, 8, CPU))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again)), \
        "same seed and epoch: the same rows, crops and flips"
    rank_one = streamed_labels(split, 0, 1, 1, 2, 8)
    assert len(rank_one) == 7 and all(len(labels) == 8 for labels in rank_one)
    # The unreadable images fall in some rank's slice of some epoch: that rank still yields 7 full batches.
    skipped = set()
    for epoch in (1, 2, 3):
        for rank in (0, 1):
            assert [len(labels) for labels in streamed_labels(split, 0, epoch, rank, 2, 8)] == [8] * 7
            skipped |= set(split.skipped)
    assert skipped == {"0007.jpg", "0064.jpg"}
    positions, needed = train_stream_positions(120, 0, 2, 0, 1, 8)
    expected = rows.class_index.to_numpy()[[p for p in positions if p not in (7, 64)][:needed]]
    assert np.array_equal(np.concatenate(streamed_labels(split, 0, 2, 0, 1, 8)), expected), \
        "the epoch's order, readable rows only, topped up from the reserve"
    first = np.concatenate(streamed_labels(split, 0, 2, 0, 1, 8)[:3])
    assert len(set(first.tolist())) >= 8, "the first batches mix the 10 classes"
    val = StreamedSplit(rows, PRE, "none", decode_batch_size=8)
    seen = [labels for rank in (0, 1) for _, labels in val.eval_batches(rank, 2, 16, CPU)]
    assert sum(len(labels) for labels in seen) == 118 and val.skipped in (["0007.jpg"], ["0064.jpg"], [])


def test_the_idle_pause_doubles_while_the_loop_spins_and_never_delays_a_step_that_waited(monkeypatch):
    """IdleStepBackoff on a fake executor and clock: quick steps with nothing moved pause 10, 20, 40, 80, 80 ms;
    anything moving resets the pause; a step that waited (in ray.wait, for tasks still decoding) is not paused."""
    from types import SimpleNamespace

    import cars_ray.data.blocks as blocks

    clock, pauses = [0.0], []
    monkeypatch.setattr(blocks.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(blocks.time, "sleep", lambda seconds: (pauses.append(round(seconds, 3)),
                                                              clock.__setitem__(0, clock[0] + seconds)))
    metrics = SimpleNamespace(num_tasks_submitted=4, num_tasks_finished=4, num_task_outputs_generated=4,
                              num_outputs_taken=0)
    executor = SimpleNamespace(_topology=[SimpleNamespace(metrics=metrics)])  # iterated as Ray iterates its operators
    backoff = blocks.IdleStepBackoff()

    def step(seconds: float) -> None:  # Ray's own step took ``seconds``, then the callback ran
        clock[0] += seconds
        backoff.on_execution_step(executor)

    for _ in range(6):
        step(0.002)
    assert pauses == [0.01, 0.02, 0.04, 0.08, 0.08], "the first step saw its metrics for the first time"
    metrics.num_outputs_taken += 1  # the consumer took an output
    step(0.002)
    step(0.002)
    assert pauses[5:] == [0.01], "a move resets the pause"
    step(0.1)  # ray.wait waited its 100 ms: a starving consumer
    step(0.1)
    assert pauses[6:] == [], "a step that waited is not paused"


@pytest.mark.slow
def test_a_slow_consumer_leaves_the_scheduling_loop_paused_not_spinning(ray_local):
    """Ray 2.60's scheduling loop runs in the iterating process and, once a slow consumer holds back every task's
    output, spins on ray.wait, holding the GIL the consumer's model needs (issue #22: a 1-CPU worker trained at
    14 instead of 21 images/s). ``IdleStepBackoff``, which every dataset of ``dataset_from_frame`` carries,
    pauses those steps: the process then uses little CPU while its consumer sleeps."""
    def wide_rows(batch: pd.DataFrame) -> dict[str, np.ndarray]:  # nested: Ray's workers cannot import this module
        """A map whose output (256 KB a row) soon fills a small object-store window."""
        return {"id": batch.id.to_numpy(), "pixels": np.zeros((len(batch), 256 * 1024), np.uint8)}

    dataset = dataset_from_frame(pd.DataFrame({"id": np.arange(2000)}), 16).map_batches(wide_rows, batch_format="pandas")
    assert IdleStepBackoff in dataset.context.custom_execution_callback_classes, "derived datasets keep the pause"
    dataset.context.execution_options.resource_limits = dataset.context.execution_options.resource_limits.copy(
        object_store_memory=16 * 1024**2)  # a few blocks of 4 MB: backpressure within the first second
    batches = iter(dataset.iter_batches(batch_size=16, batch_format="numpy", prefetch_batches=0))
    next(batches)  # the executor is running
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in batches:
        time.sleep(0.05)  # the consumer's "forward pass", which holds no GIL
        if time.perf_counter() - started > 3:
            break
    cpu_share = (time.process_time() - cpu_started) / (time.perf_counter() - started)
    getattr(batches, "close", lambda: None)()
    # measured on the 2-core machine: 0.25-0.26 of a core with the pause, 0.74-0.76 with Ray's loop spinning
    assert cpu_share < 0.45, f"the iterating process used {cpu_share:.2f} of a core while its consumer slept"


SMALL_STORE_SCRIPT = textwrap.dedent("""
    import json, sys, threading, time
    import pandas as pd, ray, torch
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address
    from cars_ray.data.stream import StreamedSplit
    from cars_ray.preprocessing import Preprocessing

    rows = pd.read_json(sys.argv[1])
    context = ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False,
                       _temp_dir=sys.argv[2], configure_logging=False)
    state = get_state_from_address(context.address_info["address"])
    stats = lambda: get_memory_info_reply(state).store_stats
    peak, done = [0], threading.Event()
    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], stats().object_store_bytes_used)
            time.sleep(0.05)
    threading.Thread(target=watch, daemon=True).start()
    pre = Preprocessing(image_size=224, resize=256, crop_pct=0.875, mean=(0.5,) * 3, std=(0.5,) * 3)
    split = StreamedSplit(rows, pre, "none", decode_batch_size=32)
    steps = sum(1 for _ in split.train_batches(0, 1, 0, 1, 32, torch.device("cpu")))
    done.set()
    print(json.dumps({"steps": steps, "peak": peak[0], "spilled": stats().spilled_bytes_total}))
    ray.shutdown()
""")


@pytest.mark.slow
@pytest.mark.timeout(400, method="thread")
def test_a_split_several_times_the_object_store_streams_without_spilling(tmp_path):
    """3,000 images decoded at 256 px are 590 MB, 3.75 times a 150 MiB object store: the epoch streams through it."""
    (tmp_path / "images").mkdir()
    rows = stream_rows(tmp_path / "images", 3000, classes=20)
    rows_file = tmp_path / "rows.json"
    rows.to_json(rows_file)
    done = subprocess.run([sys.executable, "-c", SMALL_STORE_SCRIPT, str(rows_file), str(ray_temp_dir())],
                          capture_output=True, text=True, timeout=380, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] == 3000 // 32
    assert decoded_bytes(3000, 256) > 3.5 * 150 * 1024**2
    assert result["spilled"] == 0, result
    assert 0 < result["peak"] < 150 * 1024**2, result


def test_stream_crop_and_flip_repeat_per_row_and_epoch_and_the_worker_skips_them():
    from cars_ray.data.augment import TrainAugment
    from cars_ray.data.stream import random_geometry

    images = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    one = random_geometry(images, np.arange(4), 12, 0.25, 0.5, seed=0, epoch=1)
    assert one.shape == (4, 12, 12, 3) and one.dtype == np.uint8
    assert np.array_equal(one, random_geometry(images, np.arange(4), 12, 0.25, 0.5, seed=0, epoch=1))
    assert np.array_equal(one[2:], random_geometry(images[2:], np.arange(2, 4), 12, 0.25, 0.5, seed=0, epoch=1)), \
        "a row's draws do not depend on the block it came in"
    assert not np.array_equal(one, random_geometry(images, np.arange(4), 12, 0.25, 0.5, seed=0, epoch=2))
    batch = torch.from_numpy(one)
    augment = TrainAugment(PRE, "light", host_geometry=True)
    expected = (batch.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert torch.allclose(augment(batch), expected, atol=1e-6), "light on the stream: normalise only"


def test_both_data_paths_draw_one_crop_distribution():
    """The streaming path once drew torchvision's rejection-sampled crops (mean area 0.48 of the image at scale
    0.08-1) while the cached path clamped (0.53), and trained 8 points of test top-1 worse: both now crop with
    augment.crop_boxes. Measured on a horizontal ramp, where a crop's mean brightness spread shows its width."""
    from cars_ray.data.augment import TrainAugment
    from cars_ray.data.stream import random_geometry

    count, side = 400, 64
    ramp = np.broadcast_to(np.linspace(0, 255, side)[None, :, None], (count, side, side, 3)).round().astype(np.uint8)
    streamed = random_geometry(ramp, np.arange(count), PRE.image_size, 0.08, 0.0, seed=3, epoch=1).astype(np.float32)
    torch.manual_seed(3)
    augment = TrainAugment(PRE, "light", scale_min=0.08, hflip=0.0)
    cached = augment.random_resized_crop(torch.from_numpy(ramp).permute(0, 3, 1, 2).float())
    cached = cached.permute(0, 2, 3, 1).numpy()
    # the crop's width as a fraction of the image: first to last output pixel centre spans (1 - 1/S) of it
    width = lambda crops: (crops[:, :, -1, 0] - crops[:, :, 0, 0]).mean() / 255 / (1 - 1 / PRE.image_size)
    assert abs(width(streamed) - width(cached)) < 0.03, (width(streamed), width(cached))
    assert 0.68 < width(cached) < 0.76  # E[sqrt(area * ratio)] clamped at 1, for area U(0.08, 1), ratio 3/4-4/3
    unflipped = random_geometry(ramp[:8], np.arange(8), 16, 0.08, 0.0, seed=5, epoch=2)
    assert np.array_equal(random_geometry(ramp[:8], np.arange(8), 16, 0.08, 1.0, seed=5, epoch=2),
                          unflipped[:, :, ::-1]), "hflip=1 flips the very crop hflip=0 takes"


def test_the_streams_crops_are_the_cached_paths_pixels():
    """The stream's crop (Pillow's bilinear resize of the box, in its Ray Data tasks) against the cached path's
    roi_align (``augment.resized_crops``) of the same boxes. A crop enlarged to the training size (every crop of the
    CPU parity recipe: decoded at 128, trained at 128) is the same within a grey level; a shrunk one differs a
    little more, as the two anti-aliasing filters differ (Pillow's triangle filter, roi_align's mean of bilinear
    samples; measured on parity images decoded at 256 and trained at 128: mean 0.7 grey levels)."""
    from cars_ray.data.augment import LOG_RATIO, crop_boxes, resized_crops
    from cars_ray.data.stream import random_geometry

    rng = np.random.default_rng(7)
    smooth = torch.nn.functional.interpolate(torch.from_numpy(rng.uniform(0, 255, (16, 3, 12, 12)).astype(np.float32)),
                                             size=(64, 64), mode="bicubic").clamp(0, 255).round()
    images = smooth.to(torch.uint8).permute(0, 2, 3, 1).numpy()  # photo-like: smooth, with edges, 64 px
    for size, mean_at_most, p99_at_most in ((96, 0.3, 1), (32, 1.5, 6)):  # enlarged from 64 px, then shrunk
        streamed = random_geometry(images, np.arange(16), size, 0.08, 0.0, seed=1, epoch=3).astype(np.int16)
        draws = torch.from_numpy(np.stack([np.random.default_rng([1, 3, i]).random(5) for i in range(16)]).astype(np.float32))
        boxes = crop_boxes(*draws[:, :4].unbind(1), 64, 64, (0.08, 1.0), LOG_RATIO)
        cached = resized_crops(torch.from_numpy(images).permute(0, 3, 1, 2).float(), boxes, size)
        cached = cached.round().clamp(0, 255).permute(0, 2, 3, 1).numpy().astype(np.int16)
        difference = np.abs(streamed - cached)
        assert difference.mean() <= mean_at_most and np.percentile(difference, 99) <= p99_at_most, \
            (size, difference.mean(), np.percentile(difference, 99))


# ---------------------------------------------------------------- the disk source: records decoded once (data.stream_source)

def split_table(rows: pd.DataFrame) -> pd.DataFrame:
    """A split table (split column) of ``rows``: the first 80% train, the rest val."""
    return rows.assign(split=np.where(np.arange(len(rows)) < len(rows) * 4 // 5, "train", "val"))


@pytest.mark.slow
def test_disk_records_give_the_decode_sources_batches_and_are_reused(ray_local, tmp_path):
    from cars_ray.data.loading import prepare_records
    from cars_ray.data.stream import StreamedSplit

    (tmp_path / "images").mkdir()
    rows = stream_rows(tmp_path / "images", 100, unreadable=(7, 90))
    table = split_table(rows)
    records = prepare_records(table, PRE, str(tmp_path / "run"), decode_batch_size=8)
    assert records.written == ["train", "val"] and records.unreadable == {"train": ["0007.jpg"], "val": ["0090.jpg"]}
    assert "2 unreadable image(s) have no record and are skipped every epoch (0007.jpg, 0090.jpg)" in records.summary()
    images = np.load(os.path.join(records.folders["train"], "images.npy"), mmap_mode="r")
    assert images.shape == (80, 16, 16, 3) and images.dtype == np.uint8
    assert np.array_equal(images[3], PRE.decode(rows.path[3])) and not images[7].any()
    train = rows.iloc[:80].reset_index(drop=True)
    decode = StreamedSplit(train, PRE, "light", scale_min=0.5, decode_batch_size=8)
    disk = StreamedSplit(train, PRE, "light", scale_min=0.5, decode_batch_size=8, records=records.folders["train"])
    for epoch, rank in ((1, 0), (2, 1)):
        expected = list(decode.train_batches(0, epoch, rank, 2, 8, CPU))
        got = list(disk.train_batches(0, epoch, rank, 2, 8, CPU))
        assert len(got) == len(expected) == 5 and disk.skipped == decode.skipped
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected)), \
            f"epoch {epoch}, rank {rank}: the same rows, order, crops, flips and labels as decoding the files"
    val = rows.iloc[80:].reset_index(drop=True).assign(row_id=np.arange(20))
    disk_val = StreamedSplit(val, PRE, "none", decode_batch_size=8, records=records.folders["val"])
    seen = list(disk_val.eval_batches(0, 1, 16, CPU))
    assert sum(len(labels) for _, labels in seen) == 19 and disk_val.skipped == ["0090.jpg"]
    assert np.array_equal(seen[0][0][0].numpy(), PRE.decode(val.path[0]))
    again = prepare_records(table, PRE, str(tmp_path / "run"), decode_batch_size=8)
    assert again.written == [] and again.folders == records.folders, "a --resume (same content key) reuses them"
    assert again.unreadable == records.unreadable and "reused train, reused val" in again.summary()


def test_the_records_key_follows_the_rows_the_files_and_the_decode_only(tmp_path):
    from cars_ray.data.loading import split_rows
    from cars_ray.data.records import content_key

    rows = split_rows(stream_rows(tmp_path, 6))
    key = content_key(rows, PRE)
    assert key == content_key(rows.copy(), PRE) and len(key) == 16
    assert key == content_key(rows, dataclasses.replace(PRE, mean=(0.4,) * 3, image_size=14)), \
        "the normalisation and the training size are not part of the decode"
    assert key != content_key(rows, dataclasses.replace(PRE, resize=20))
    assert key != content_key(rows, dataclasses.replace(PRE, box_margin=0.1))
    assert key != content_key(rows.assign(class_index=rows.class_index[::-1].to_numpy()), PRE)
    make_image(tmp_path / "0002.jpg", (30, 20), (9, 9, 9))
    assert key != content_key(rows, PRE), "a replaced photo is decoded again"


def test_an_interrupted_records_write_leaves_nothing_and_is_never_reused(tmp_path):
    from cars_ray.data.records import PARTIAL, is_complete, remove_other_records, write_records

    folder = str(tmp_path / "decoded" / "train-0123456789abcdef")

    def blocks_then_failure():
        yield {"image": np.full((2, 4, 4, 3), 7, np.uint8), "row_id": np.array([3, 0])}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_records(folder, 5, 4, blocks_then_failure())
    assert os.listdir(tmp_path / "decoded") == [], "neither the folder nor its staging copy remains"
    # A write killed outright (no chance to clean up) leaves its staging folder: never taken for the records.
    os.makedirs(folder + PARTIAL + "dead")
    np.save(os.path.join(folder + PARTIAL + "dead", "images.npy"), np.zeros((5, 4, 4, 3), np.uint8))
    np.save(os.path.join(folder + PARTIAL + "dead", "readable.npy"), np.ones(5, bool))
    assert not is_complete(folder)
    remove_other_records(str(tmp_path / "decoded"), "train", keep=folder)
    readable = write_records(folder, 5, 4, iter([{"image": np.full((2, 4, 4, 3), 7, np.uint8),
                                                  "row_id": np.array([3, 0])}]))
    assert os.listdir(tmp_path / "decoded") == ["train-0123456789abcdef"] and is_complete(folder)
    assert readable.tolist() == [True, False, False, True, False]
    assert np.load(os.path.join(folder, "images.npy"))[[0, 3]].min() == 7


def test_the_records_need_their_bytes_free_on_disk_before_any_write(tmp_path, monkeypatch):
    import shutil

    from cars_ray.data.loading import prepare_records

    rows = stream_rows(tmp_path, 10)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as failure:
        prepare_records(split_table(rows), PRE, str(out))
    needed = decoded_bytes(10, 16)
    assert str(failure.value) == (f"data.stream_source=disk: the decoded records need {needed / 1e6:.1f} MB ({needed} "
                                  f"bytes) in {out / 'decoded'} but its disk has 0.0 MB (1000 bytes) free; free space "
                                  "there, give another --output-dir or set data.stream_source=decode")
    assert os.listdir(out / "decoded") == []


def test_stream_source_is_checked_like_the_other_choices():
    from cars_ray.config import load_config

    assert load_config(None, ["data.stream_source=disk"]).data.stream_source == "disk"
    with pytest.raises(ConfigError, match="^data.stream_source is 'cache'; expected one of decode, disk$"):
        load_config(None, ["data.stream_source=cache"])
