"""From a data config to what the training workers read: decoded splits (cached) or their manifest rows (streaming).

Which of the two a run takes is ``data.pipeline`` (:func:`resolve_pipeline`, the budget in
``cars_ray.data.sizing``). Cached: each image is decoded, cropped to its box (when the layout has boxes and ``data.use_boxes``) and
resized once per run by :meth:`Preprocessing.decode`, in parallel over the cluster's CPUs; the result (uint8
images, labels, and each row's position in the split as ``row_id``) stays in Ray's object store for the run
and every training worker pulls it from there once (``cars_ray.data.feed``). Streaming: only the split's
manifest rows go to the object store; the workers decode each epoch's rows as a stream
(``cars_ray.data.stream``), from the JPEGs (``data.stream_source: decode``) or from records decoded once into
the run's folder (``disk``: :func:`prepare_records`, the format in ``cars_ray.data.records``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import ray

from cars_ray.config import Config, DataConfig
from cars_ray.data.blocks import dataset_from_frame
from cars_ray.data.layouts import read_dataset, resolve_root
from cars_ray.data.manifest import Manifest
from cars_ray.data.records import check_space, content_key, is_complete, read_readable, records_folder, \
    remove_other_records, write_records
from cars_ray.data.sizing import PipelineChoice, choose_pipeline, decoded_bytes
from cars_ray.data.split import apply_split, read_split_file, split_warnings, stratified_split
from cars_ray.errors import ConfigError, DataError, ImageError
from cars_ray.preprocessing import Preprocessing

ROWS_PER_BLOCK = 64
DECODE_PHASE = "decoding"


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
        for warning in split_warnings(split, manifest.class_names, cfg.val_fraction, cfg.test_fraction):
            print(f"warning: {warning}")
        table = apply_split(manifest, split, "the generated split")
    if cfg.max_images_per_class:
        table = (table.sort_values("rel_path").groupby(["split", "class_index"], group_keys=False)
                 .head(cfg.max_images_per_class).reset_index(drop=True))
    for name in ("train", "val"):
        if not (table.split == name).any():
            raise DataError(f"the split of {root} has no {name!r} images")
    return manifest, table


def check_full_batches(cfg: Config, train_images: int, source: str) -> None:
    """Every worker must get at least one full batch per epoch, or training would run on nothing."""
    per_worker = train_images // cfg.train.num_workers
    if per_worker < cfg.data.batch_size:
        raise ConfigError(f"data.batch_size {cfg.data.batch_size} is larger than the {per_worker} training images "
                          f"each of the {cfg.train.num_workers} worker(s) gets ({train_images} in {source}); "
                          "lower data.batch_size")


def load_training_table(cfg: Config) -> tuple[Manifest, pd.DataFrame]:
    """The split table of a training config, checked to give every worker a full batch (no Ray needed)."""
    manifest, table = load_split_table(cfg.data)
    check_full_batches(cfg, int((table.split == "train").sum()), f"the training split of {manifest.root}")
    return manifest, table


def decode_batch(batch: pd.DataFrame, preprocessing: Preprocessing, progress=None) -> dict[str, np.ndarray]:
    """Decode a block of manifest rows to ``image`` (N, resize, resize, 3) uint8, ``label`` and ``row_id``.

    Unreadable images are dropped here (they are listed by ``inspect_data`` and the crop report).
    ``progress`` (a ProgressBoard) hears of every decoded block.
    """
    images, labels, paths, row_ids = [], [], [], []
    for row in batch.to_dict("records"):
        try:
            images.append(preprocessing.decode(row["path"], preprocessing.row_box(row)))
        except ImageError:
            continue
        labels.append(row["class_index"])
        paths.append(row["rel_path"])
        row_ids.append(row["row_id"])
    size = preprocessing.resize
    if progress is not None:
        progress.advance.remote(DECODE_PHASE, len(batch))
    return {
        "image": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        "label": np.asarray(labels, dtype=np.int64),
        "rel_path": np.asarray(paths, dtype=object),
        "row_id": np.asarray(row_ids, dtype=np.int64),
    }


def split_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The manifest columns a decode needs, with ``row_id`` = each row's position in the split (0..N-1)."""
    columns = ["path", "rel_path", "class_index", "x1", "y1", "x2", "y2"]
    return rows[columns].reset_index(drop=True).assign(row_id=lambda frame: np.arange(len(frame)))


def decoded_dataset(rows: pd.DataFrame, preprocessing: Preprocessing, batch_size: int = 32,
                    progress=None) -> ray.data.Dataset:
    """A lazy Ray Dataset decoding ``rows`` in parallel across the cluster's CPUs."""
    rows = split_rows(rows)
    return dataset_from_frame(rows, ROWS_PER_BLOCK).map_batches(
        decode_batch, batch_format="pandas", batch_size=batch_size,
        fn_kwargs={"preprocessing": preprocessing, "progress": progress})


def build_training_datasets(table: pd.DataFrame, preprocessing: Preprocessing, cfg: DataConfig,
                            progress=None) -> dict[str, ray.data.MaterializedDataset]:
    """Train and val datasets, decoded once and held in Ray's object store for the whole run."""
    if progress is not None:
        progress.begin.remote(DECODE_PHASE, int(table.split.isin(["train", "val"]).sum()))
    datasets = {}
    for name in ("train", "val"):
        datasets[name] = (decoded_dataset(table[table.split == name], preprocessing, cfg.decode_batch_size, progress)
                          .drop_columns(["rel_path"]).materialize())
        # The decode showed its progress; the workers' one pull of the cached blocks needs no bar (a dataset
        # carries the context it was made with into the workers).
        datasets[name].context.enable_progress_bars = False
    return datasets


def worker_memory_share(cfg: Config, use_gpu: bool) -> float:
    """Bytes of Ray ``memory`` one training worker has on the smallest node that can hold one: the node's memory
    divided among the workers that fit there (by GPUs or CPUs per worker, at most ``train.num_workers``)."""
    shares = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        per_node = (resources.get("GPU", 0) / cfg.train.gpus_per_worker if use_gpu
                    else resources.get("CPU", 0) / cfg.train.cpus_per_worker)
        workers = min(int(per_node + 1e-9), cfg.train.num_workers)
        if workers >= 1:
            shares.append(resources.get("memory", 0) / workers)
    if not shares:  # no node holds a worker now (an autoscaler adds them): the head's memory, shared by all
        shares = [ray.cluster_resources().get("memory", 0) / cfg.train.num_workers]
    return min(shares)


def resolve_pipeline(cfg: Config, table: pd.DataFrame, preprocessing: Preprocessing, use_gpu: bool) -> PipelineChoice:
    """The data path of this run (``data.pipeline``; auto decides from the decoded size of train + val against
    the cluster's object store and a worker's memory). Needs Ray up; raises ConfigError for a hand-set cached
    path that cannot fit."""
    images = int(table.split.isin(["train", "val"]).sum())
    store = ray.cluster_resources().get("object_store_memory", 0)
    return choose_pipeline(cfg.data.pipeline, decoded_bytes(images, preprocessing.resize), store,
                           worker_memory_share(cfg, use_gpu))


def put_stream_rows(table: pd.DataFrame) -> dict[str, ray.ObjectRef]:
    """The streaming path's only shared state: each split's manifest rows (``split_rows``), once in the object store."""
    return {name: ray.put(split_rows(table[table.split == name])) for name in ("train", "val")}


@dataclass(frozen=True)
class StreamRecords:
    """The disk source of the streaming path: each split's records folder, and what preparing them did."""

    folders: dict[str, str]  # split -> records folder (cars_ray.data.records)
    written: list[str]  # the splits decoded now (the others' folders were reused: their content key matched)
    unreadable: dict[str, list[str]]  # split -> relative paths of the images the decode could not read
    seconds: float

    def summary(self) -> str:
        """The setup line's account, e.g. "disk: wrote train (8144 images), reused val, in 61.2 s; ..."."""
        parts = [f"{'wrote' if name in self.written else 'reused'} {name}" for name in self.folders]
        folder = os.path.dirname(next(iter(self.folders.values())))
        text = f"stream source disk: {', '.join(parts)} records in {folder} ({self.seconds:.1f}s)"
        bad = [path for paths in self.unreadable.values() for path in paths]
        if bad:
            text += (f"; {len(bad)} unreadable image(s) have no record and are skipped every epoch "
                     f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})")
        return text


def prepare_records(table: pd.DataFrame, preprocessing: Preprocessing, output_dir: str, decode_batch_size: int = 32,
                    progress=None) -> StreamRecords:
    """The train and val records folders under ``output_dir/decoded``: reused where the content key matches (a
    --resume, a later epoch), else decoded once by Ray Data tasks and written by this driver, after checking the
    disk holds all the splits to write. Raises ConfigError (not enough disk space)."""
    started = time.perf_counter()
    rows = {name: split_rows(table[table.split == name]) for name in ("train", "val")}
    folders = {name: records_folder(output_dir, name, content_key(frame, preprocessing)) for name, frame in rows.items()}
    missing = [name for name, folder in folders.items() if not is_complete(folder)]
    if missing:
        check_space(os.path.dirname(folders[missing[0]]),
                    sum(decoded_bytes(len(rows[name]), preprocessing.resize) for name in missing))
        if progress is not None:
            progress.begin.remote(DECODE_PHASE, sum(len(rows[name]) for name in missing))
    unreadable = {}
    for name, folder in folders.items():
        if name in missing:
            remove_other_records(os.path.dirname(folder), name, keep=folder)
            dataset = decoded_dataset(rows[name], preprocessing, decode_batch_size, progress).select_columns(
                ["image", "row_id"])
            dataset.context.enable_progress_bars = False  # the board draws the decode's bar
            readable = write_records(folder, len(rows[name]), preprocessing.resize, dataset.iter_batches(
                batch_size=None, batch_format="numpy", prefetch_batches=2))
        else:
            readable = read_readable(folder)
        unreadable[name] = sorted(rows[name].rel_path.to_numpy()[~readable].tolist())
    return StreamRecords(folders, missing, unreadable, time.perf_counter() - started)


@dataclass
class TrainingData:
    """What the driver hands a TorchTrainer and its workers for one run (``fit`` or a Tune search)."""

    choice: PipelineChoice
    datasets: dict  # cached: the materialised train and val datasets; streaming: none
    split_rows: dict | None  # cached: manifest rows per split (the workers' preallocation)
    streams: dict | None  # streaming: ObjectRefs of each split's manifest rows
    train_images: int  # readable (cached) or listed (streaming) training images
    val_images: int
    records: StreamRecords | None = None  # streaming from disk (data.stream_source=disk): the records folders

    @property
    def stream_source(self) -> str | None:
        """decode | disk on the streaming path; None on the cached one."""
        return None if self.choice.pipeline == "cached" else ("disk" if self.records else "decode")

    def as_dict(self) -> dict:
        """run.json's account of the data path."""
        return {**self.choice.as_dict(), "stream_source": self.stream_source,
                "stream_records": self.records.folders if self.records else None}


def check_stream_cpus(cfg: Config, reserved_cpus: float) -> None:
    """The streaming path decodes in Ray Data tasks of one CPU each: at least one CPU must stay free of the
    training workers (``reserved_cpus``), or the first epoch would wait forever."""
    total = ray.cluster_resources().get("CPU", 0)
    if total - reserved_cpus < 1:
        raise ConfigError(f"data.pipeline=streaming decodes in Ray Data tasks of one CPU each, but the training "
                          f"workers take {reserved_cpus:g} of the cluster's {total:g} CPUs (train.num_workers x "
                          "train.cpus_per_worker); lower train.cpus_per_worker, add CPU nodes or set data.pipeline=cached")


def prepare_training_data(cfg: Config, table: pd.DataFrame, preprocessing: Preprocessing, use_gpu: bool,
                          reserved_cpus: float, progress=None, output_dir: str | None = None) -> TrainingData:
    """Resolve ``data.pipeline`` and prepare its data: decode and materialise (cached), or put the manifest rows
    in the object store (streaming) and, with ``data.stream_source=disk``, prepare the records folders under
    ``output_dir`` (:func:`prepare_records`). Raises ConfigError (a cached path that cannot fit, no CPU left to
    decode a stream, no disk space for the records, fewer readable images than a full batch per worker)."""
    choice = resolve_pipeline(cfg, table, preprocessing, use_gpu)
    counts = {name: int((table.split == name).sum()) for name in ("train", "val")}
    if choice.pipeline == "streaming":
        check_stream_cpus(cfg, reserved_cpus)
        records = None
        if cfg.data.stream_source == "disk":
            if output_dir is None:
                raise ConfigError("data.stream_source=disk writes its records under the run's output folder, "
                                  "and this caller gave none; set data.stream_source=decode")
            records = prepare_records(table, preprocessing, output_dir, cfg.data.decode_batch_size, progress)
        return TrainingData(choice, {}, None, put_stream_rows(table), counts["train"], counts["val"], records)
    datasets = build_training_datasets(table, preprocessing, cfg.data, progress)
    train_images = datasets["train"].count()
    check_full_batches(cfg, train_images, "the readable training images")
    return TrainingData(choice, datasets, counts, None, train_images, datasets["val"].count())
