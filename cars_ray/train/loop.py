"""The per-worker training function: plain PyTorch plus a few ``ray.train`` calls.

Each worker opens the train and val splits (cached: pulled once, ``CachedSplit``; streaming: decoded per epoch
by Ray Data tasks, ``StreamedSplit``; ``data.pipeline`` arrives resolved), builds a
:class:`~cars_ray.train.run.TrainingRun`, continues from the last full checkpoint if there is one,
then per epoch trains on its share of a fresh seeded order, validates on its share of the val rows
(sums all-reduced) and reports. Rank 0 writes checkpoints: the evaluation weights when the epoch
is a new best, the full training state every ``train.checkpoint_every`` epochs and at the end.
"""

from __future__ import annotations

import itertools
import random
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import ray.train
import ray.train.torch
import torch

from cars_ray.checkpoint import make_meta, read_train_state, write_checkpoint
from cars_ray.config import Config
from cars_ray.data.feed import CachedSplit
from cars_ray.preprocessing import Preprocessing
from cars_ray.train.tracking import EpochTracker, TrackingTarget

if TYPE_CHECKING:
    from cars_ray.train.run import TrainingRun

FULL, WEIGHTS = "full", "weights"  # checkpoint kinds: training state + weights, or the weights of a new best


@dataclass(frozen=True)
class LoopSettings:
    """What the driver hands every worker (inside Ray Train's ``train_loop_config``)."""

    config: dict
    class_names: list[str]
    preprocessing: dict
    progress: Any = None  # a ProgressBoard actor the driver draws, or None (Tune trials)
    tracking: TrackingTarget | None = None  # where rank 0 writes each epoch's scalars
    # A restarted Tune trial's session starts empty while its Train run resumes from storage: the trial then
    # reports the epochs its checkpoint holds again (a run finished before the restart would report nothing).
    report_history_on_resume: bool = False
    # cached: each split's manifest row count (row ids lie below it); streaming: each split's manifest rows,
    # an ObjectRef of the frame cars_ray.data.loading.put_stream_rows made.
    split_rows: dict | None = None
    streams: dict | None = None
    # streaming with data.stream_source=disk: each split's decoded records folder (cars_ray.data.records); else None.
    stream_records: dict | None = None

    def as_loop_config(self) -> dict:
        return {"settings": self}


def train_loop_per_worker(loop_config: dict) -> None:
    # The model's code (timm, torchvision) loads here, in the worker: every Tune trial's process imports this
    # module to hand the function to its TorchTrainer, and would pay seconds of imports for nothing.
    from cars_ray.train.run import TrainingRun

    settings: LoopSettings = loop_config["settings"]
    cfg = Config.from_dict(settings.config, source="train loop config")
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    seed_everything(cfg.train.seed + rank)
    device = ray.train.torch.get_device()
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
    preprocessing = Preprocessing.from_dict(settings.preprocessing, "train loop config")
    train_rows, val_rows = (open_split(name, settings, cfg, preprocessing, device) for name in ("train", "val"))
    steps = train_rows.steps_per_epoch(cfg.data.batch_size, world_size)
    steps = min(steps, cfg.train.max_steps_per_epoch or steps)
    run = TrainingRun(cfg, len(settings.class_names), preprocessing, device, steps, world_size)
    committed = resume(run, rank, settings.progress)
    if committed and settings.report_history_on_resume:
        report_history(run, committed)

    board = settings.progress if rank == 0 else None
    tracker = EpochTracker(settings.tracking if rank == 0 else None, flat_params(settings.config))
    while not run.state.finished(cfg.train.epochs):
        epoch = run.state.epoch + 1
        run.apply_freeze(epoch)
        phase = f"epoch {epoch}/{cfg.train.epochs}"
        if board is not None:
            board.begin.remote(phase, run.steps_per_epoch * cfg.data.batch_size * world_size)
        started = time.perf_counter()
        # islice closes a stream at the cap (its tasks stop); every rank takes the same number of steps.
        train_metrics = run.train_epoch(
            itertools.islice(train_rows.train_batches(cfg.train.seed, epoch, rank, world_size, cfg.data.batch_size,
                                                      device), steps),
            on_progress=(lambda images: board.advance.remote(phase, images * world_size)) if board else None)
        train_seconds = time.perf_counter() - started
        val_metrics = run.validate(val_rows.eval_batches(rank, world_size, cfg.data.eval_batch_size, device))
        for rows, name in ((train_rows, "training"), (val_rows, "validation")):
            if getattr(rows, "skipped", None):
                say(f"[cars_ray] epoch {epoch}, rank {rank}: {len(rows.skipped)} unreadable {name} image(s) skipped "
                    f"({', '.join(rows.skipped[:5])}{', ...' if len(rows.skipped) > 5 else ''})"
                    + ("; reserve rows of the epoch took their place" if name == "training" else ""), 0, board)
        metrics = run.end_epoch(train_metrics, val_metrics, started, train_seconds)
        tracker.log(metrics)
        report(run, metrics, settings, rank)
        say(format_epoch(metrics, cfg.train.epochs), rank, board)
    tracker.close()


def open_split(name: str, settings: LoopSettings, cfg: Config, preprocessing: Preprocessing, device: torch.device):
    """The ``train`` or ``val`` split as this worker reads it: ``CachedSplit`` (pulled once from its dataset
    shard) or ``StreamedSplit`` (decoded per epoch), by the resolved ``data.pipeline``."""
    if cfg.data.pipeline == "streaming":
        from cars_ray.data.stream import StreamedSplit

        data = cfg.data
        return StreamedSplit(ray.get(settings.streams[name]), preprocessing, data.augment, data.rrc_scale_min,
                             data.hflip, data.decode_batch_size,
                             settings.stream_records[name] if settings.stream_records else None)
    return CachedSplit.collect(ray.train.get_dataset_shard(name), settings.split_rows[name], device,
                               cfg.data.cache_on_device)


def say(text: str, rank: int, board=None) -> None:
    """A line from rank 0: to the driver's console through the board, and to this worker's log."""
    if rank != 0:
        return
    print(text, flush=True)  # the worker's log (Ray's session logs; the console too with --verbose)
    if board is not None:
        board.line.remote(text)


def flat_params(config: dict) -> dict[str, Any]:
    """``{"optim.lr": 0.001, ...}``: the config as tracking tools take parameters."""
    return {f"{section}.{key}": value for section, values in config.items() if section != "tune"
            for key, value in values.items()}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resume(run: TrainingRun, rank: int, board=None) -> list:
    """Continue from the latest full-state checkpoint of this run, if any (worker restart or --resume);
    returns the run's committed checkpoints (``ReportedCheckpoint``) when it did, else []."""
    if ray.train.get_checkpoint() is None:
        return []
    reported = ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
    full = [r.checkpoint for r in reported if r.metrics.get("checkpoint_kind") == FULL]
    if not full:
        say("[cars_ray] no full checkpoint yet (train.checkpoint_every); starting from epoch 1", rank, board)
        return []
    with full[-1].as_directory() as directory:
        run.load_state_dict(read_train_state(directory))
    run.state.resumed_at.append(run.state.epoch)
    run.apply_freeze(run.state.epoch + 1)
    left = "nothing left to train" if run.state.finished(run.cfg.train.epochs) else f"epoch {run.state.epoch + 1} next"
    say(f"[cars_ray] resumed from the checkpoint of epoch {run.state.epoch}; {left}", rank, board)
    return reported


def report_history(run: TrainingRun, committed: list) -> None:
    """Report every epoch the resumed state holds again, each with the path of its committed checkpoint
    (as ``TuneReportCallback`` forwards one), marked ``replayed``; no checkpoint is written."""
    paths = {int(r.metrics["epoch"]): r.checkpoint.path for r in committed if "epoch" in r.metrics}
    for row in run.state.history:
        path = {"checkpoint_path": paths[row["epoch"]]} if row["epoch"] in paths else {}
        ray.train.report({**row, **path, "replayed": True})


def checkpoint_kind(metrics: dict, cfg: Config) -> str:
    """full at every train.checkpoint_every-th epoch, the last epoch and a stop; weights at a new best."""
    epoch = metrics["epoch"]
    if epoch % cfg.train.checkpoint_every == 0 or epoch == cfg.train.epochs or metrics["stop_reason"]:
        return FULL
    return WEIGHTS if metrics["new_best"] else ""


def report(run: TrainingRun, metrics: dict, settings: LoopSettings, rank: int) -> None:
    """Report the epoch's metrics; rank 0 attaches a checkpoint when one is due, uploaded in the background."""
    kind = checkpoint_kind(metrics, run.cfg)
    metrics = {**metrics, "checkpoint_kind": kind}
    if rank != 0 or not kind:
        ray.train.report(metrics)
        return
    directory = tempfile.mkdtemp(prefix="cars_ray-checkpoint-")  # Ray deletes it once uploaded
    meta = make_meta(run.cfg, settings.class_names, Preprocessing.from_dict(settings.preprocessing, "train loop config"),
                     ema=run.ema is not None, epoch=metrics["epoch"], metrics=metrics)
    write_checkpoint(directory, run.eval_weights(), meta, run.state_dict() if kind == FULL else None)
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                     checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC)


def format_epoch(metrics: dict, epochs: int) -> str:
    line = (f"[cars_ray] epoch {metrics['epoch']}/{epochs}  train_loss {metrics['train_loss']:.4f}  "
            f"train_top1 {metrics['train_top1']:.3f}  val_loss {metrics['val_loss']:.4f}  "
            f"val_top1 {metrics['val_top1']:.3f}  val_top5 {metrics['val_top5']:.3f}  "
            f"{metrics['images_per_second']:.0f} img/s  {metrics['epoch_seconds']:.1f}s")
    return line + (f"  ({metrics['stop_message']})" if metrics["stop_reason"] else "")
