"""Driver side of a training run: data, ``TorchTrainer``, then the best checkpoint and its evaluation."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import ray
import ray.train

from cars_ray.checkpoint import META_FILE, MODEL_FILE, read_train_state
from cars_ray.config import Config
from cars_ray.data.loading import load_training_table, prepare_training_data
from cars_ray.data.manifest import Manifest
from cars_ray.data.split import split_of, write_split
from cars_ray.errors import CarsRayError, Interrupted
from cars_ray.evaluate.evaluation import EvaluationOptions, evaluate_checkpoint
from cars_ray.outputs import replace_dir, write_csv, write_figure, write_json
from cars_ray.plots import training_curves_figure
from cars_ray.preprocessing import Preprocessing
from cars_ray.report import write_report
from cars_ray.runtime import watching_ctrl_c
from cars_ray.storage import check_shared_input, check_shared_output, remove_storage, storage_exists, storage_join, storage_uri
from cars_ray.train import STOP_NON_FINITE
from cars_ray.train.loop import LoopSettings, train_loop_per_worker
from cars_ray.train.tracking import TrackingTarget, add_figures
from cars_ray.train.trainer import build_trainer, scaling_config, train_run_config


class TrainingError(CarsRayError):
    """Training ran but could not produce a usable model (e.g. the loss diverged)."""


@dataclass
class TrainOutcome:
    output_dir: str
    best_dir: str
    best_metrics: dict
    test_metrics: dict | None
    history: pd.DataFrame


def storage_dir(cfg: Config, output_dir: str) -> str:
    """Ray Train's storage: train.storage_path (a folder or a URI such as s3://...), else <output_dir>/ray_results."""
    return storage_uri(cfg.train.storage_path or os.path.join(output_dir, "ray_results"))


def check_cluster_paths(cfg: Config, output_dir: str, table: pd.DataFrame) -> None:
    """On a Ray cluster of several nodes, fail now unless every node sees the images, the checkpoint
    storage and the output folder (evaluation actors load ``best/`` from it), in one sentence."""
    if len(table):
        check_shared_input(table.path.iloc[0], "the image")
    check_shared_output(storage_dir(cfg, output_dir), "train.storage_path" if cfg.train.storage_path else
                        "<--output-dir>/ray_results (train.storage_path is unset)")
    check_shared_output(output_dir, "--output-dir")


def prepare_run_dir(cfg: Config, output_dir: str, resume: bool, progress=None) -> str:
    """The Ray Train storage of this run; a fresh run starts without the old run's checkpoints.

    ``resume`` where the run saved nothing yet (train.py checked that ``output_dir`` holds this run's
    earlier output: it was interrupted before Ray Train's first report) starts the run from epoch 1."""
    storage = storage_dir(cfg, output_dir)
    run_dir = storage_join(storage, cfg.train.run_name)
    exists = storage_exists(run_dir)
    if resume and not exists:
        note(f"[cars_ray] --resume: run {cfg.train.run_name!r} saved nothing in {storage} before it stopped; "
             "starting it from epoch 1", progress)
    if not resume and exists:
        remove_storage(run_dir)
    return storage


def fit(cfg: Config, output_dir: str, resume: bool = False, evaluate_test: bool = True,
        train_fn: Callable[[dict], None] = train_loop_per_worker,
        data: tuple[Manifest, pd.DataFrame] | None = None, progress=None, dashboard: str = "") -> TrainOutcome:
    """Train with Ray Train, copy the best checkpoint to ``output_dir/best`` and evaluate it on test rows.

    ``data`` is what :func:`load_training_table` returned, when the caller checked it already;
    ``progress`` a ProgressBoard the caller draws (decoding, epochs, evaluation); ``dashboard`` the Ray
    dashboard's "host:port" (``runtime.init_ray``), named in the setup line.
    """
    fit_started = time.perf_counter()
    tracking = TrackingTarget.resolve(cfg.train.tracking, output_dir, cfg.train.run_name)
    manifest, table = data or load_training_table(cfg)
    check_cluster_paths(cfg, output_dir, table)
    write_used_split(output_dir, table)
    preprocessing = Preprocessing.from_config(cfg)
    scaling = scaling_config(cfg)
    device = f"{scaling.num_workers} worker(s) x " + (f"{cfg.train.gpus_per_worker:g} GPU" if scaling.use_gpu
                                                       else f"{cfg.train.cpus_per_worker:g} CPU")
    if cfg.train.torch_threads:
        device += f" ({cfg.train.torch_threads} torch threads each)"
    note(f"[cars_ray] {manifest.layout} data at {manifest.root}: {manifest.num_classes} classes; "
         + ", ".join(f"{name} {int((table.split == name).sum())}" for name in ("train", "val", "test"))
         + f"; {cfg.model.backbone} at {cfg.data.image_size} px on {device}"
         + (f"; Ray dashboard http://{dashboard}" if dashboard else ""), progress)
    for line in manifest.reading_summary(shown=5):  # rows not trained on are counted and named
        note(f"[cars_ray] {line}", progress)
    note(f"[cars_ray] {protocol_line(preprocessing, table)}", progress)
    started = time.perf_counter()
    data = prepare_training_data(cfg, table, preprocessing, scaling.use_gpu,
                                 cfg.train.num_workers * cfg.train.cpus_per_worker, progress, output_dir)
    note(f"[cars_ray] data path {data.choice.reason}"
         + (f"; stream source {data.stream_source}" if data.stream_source else ""), progress)
    if data.records is not None:
        note(f"[cars_ray] {data.records.summary()}", progress)
    if data.choice.pipeline == "cached":
        note(f"[cars_ray] decoded {data.train_images} train and {data.val_images} val images "
             f"in {time.perf_counter() - started:.1f}s", progress)
    cfg = resolved_pipeline(cfg, data.choice.pipeline)
    settings = LoopSettings(cfg.to_dict(), manifest.class_names, preprocessing.to_dict(), progress, tracking,
                            split_rows=data.split_rows, streams=data.streams,
                            stream_records=data.records.folders if data.records else None)
    run_config = train_run_config(cfg, cfg.train.run_name, prepare_run_dir(cfg, output_dir, resume, progress))
    trainer = build_trainer(cfg, settings, data.datasets, run_config, train_fn)
    with watching_ctrl_c() as interrupted:
        try:
            result = trainer.fit()
        except (SystemExit, Exception):
            # On Ctrl-C Ray Train's handler aborts the run and exits, or its dead controller's error surfaces.
            if not interrupted():
                raise
    if interrupted():
        raise Interrupted(f"training was stopped before its end; its checkpoints are in "
                          f"{storage_join(run_config.storage_path, cfg.train.run_name)}: continue it with "
                          f"--resume --output-dir {output_dir}")
    if result.error is not None:
        raise result.error
    outcome = finish(cfg, output_dir, result, manifest.class_names, table, evaluate_test, progress)
    figures = {"curves": os.path.join(output_dir, "curves.png")}
    figures.update({name: os.path.join(output_dir, "evaluation", f"{name}.png")
                    for name in ("confusion_matrix", "errors", "per_class")})
    add_figures(tracking, figures)
    write_json(os.path.join(output_dir, "run.json"),
               {**run_summary(cfg, outcome, time.perf_counter() - fit_started), **data.as_dict(),
                "protocol": preprocessing.protocol})
    write_report(output_dir, f"cars_ray run {cfg.train.run_name}: {cfg.model.backbone}, {cfg.data.image_size} px")
    return outcome


def protocol_line(preprocessing: Preprocessing, table: pd.DataFrame) -> str:
    """What the run trains and evaluates on (data.use_boxes), with how many of its rows have a box."""
    boxed = int(table[["x1", "y1", "x2", "y2"]].notna().all(axis=1).sum())
    if not preprocessing.use_boxes:
        return (f"protocol: whole images (data.use_boxes false): the boxes of {boxed} of {len(table)} rows are not "
                "used" if boxed else "protocol: whole images (data.use_boxes false; the data has no boxes)")
    if not boxed:
        return "protocol: box crops: the data has no boxes, so its images are taken as the crops they are"
    return f"protocol: box crops: {boxed} of {len(table)} rows cropped to their box" + (
        f", {len(table) - boxed} without one taken whole" if boxed < len(table) else "")


def resolved_pipeline(cfg: Config, pipeline: str) -> Config:
    """A copy of ``cfg`` with ``data.pipeline`` resolved (cached | streaming): what the workers and checkpoints see."""
    resolved = Config.from_dict(cfg.to_dict(), source="resolved config")
    resolved.data.pipeline = pipeline
    return resolved


def run_summary(cfg: Config, outcome: TrainOutcome, seconds: float) -> dict:
    """O/run.json: what pipelines/compare.py lines up across runs."""
    test = outcome.test_metrics or {}
    return {"run_name": cfg.train.run_name, "backbone": cfg.model.backbone, "head": cfg.model.head,
            "image_size": cfg.data.image_size, "epochs_run": int(outcome.history.epoch.max()),
            "best_epoch": int(outcome.best_metrics["epoch"]), "best_val_top1": float(outcome.best_metrics["val_top1"]),
            "test_top1": test.get("top1"), "test_top5": test.get("top5"), "test_images": test.get("num_images"),
            "images_per_second": float(outcome.history.images_per_second.mean()),
            "wall_seconds": round(seconds, 1)}


def write_used_split(output_dir: str, table: pd.DataFrame) -> None:
    """O/split.csv: the rows a run (or search) trained, selected and tested on, in split.py's format, so
    `evaluate.py --root-dir <data.root_dir> --split-file O/split.csv --split test` scores its test rows again."""
    write_split(split_of(table), os.path.join(output_dir, "split.csv"))


def note(text: str, progress=None) -> None:
    """A line for the console: through the progress board when one is drawn, else printed."""
    if progress is not None:
        progress.line.remote(text)
    else:
        print(text, flush=True)


def finish(cfg: Config, output_dir: str, result, class_names: list[str], table: pd.DataFrame,
           evaluate_test: bool, progress=None) -> TrainOutcome:
    latest = result.checkpoint
    if latest is None:
        raise TrainingError("training reported no checkpoint")
    with latest.as_directory() as directory:
        history = pd.DataFrame(read_train_state(directory)["run_state"]["history"])
    if len(history) and history.stop_reason.iloc[-1] == STOP_NON_FINITE:
        raise TrainingError(str(history.stop_message.iloc[-1]))
    best_checkpoint = result.get_best_checkpoint(cfg.train.select_metric, cfg.train.select_mode)
    best_metrics = next(m for c, m in result.best_checkpoints if c.path == best_checkpoint.path)
    best_dir = os.path.join(output_dir, "best")
    copy_inference_checkpoint(best_checkpoint, best_dir)
    write_csv(os.path.join(output_dir, "metrics.csv"), history)
    write_figure(os.path.join(output_dir, "curves.png"), training_curves_figure(history, int(best_metrics["epoch"])))
    test_metrics = None
    test_rows = table[table.split == "test"]
    if evaluate_test and len(test_rows):
        started = time.perf_counter()
        test_metrics = evaluate_checkpoint(best_dir, test_rows, class_names, os.path.join(output_dir, "evaluation"),
                                           EvaluationOptions(tta=cfg.train.eval_tta, title="test", progress=progress))
        note(f"[cars_ray] evaluated {test_metrics['num_images']} test images in {time.perf_counter() - started:.1f}s",
             progress)
    return TrainOutcome(output_dir, best_dir, best_metrics, test_metrics, history)


def copy_inference_checkpoint(checkpoint: ray.train.Checkpoint, best_dir: str) -> None:
    """Copy the weights and meta of a checkpoint (no training state) to ``best_dir``, atomically."""
    with checkpoint.as_directory() as directory:
        replace_dir(directory, best_dir, only=(MODEL_FILE, META_FILE))
