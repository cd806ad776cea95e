"""Driver side of a training run: data, ``TorchTrainer``, then the best checkpoint and its evaluation."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from cars_ray.config import Config
from cars_ray.data.loading import build_training_datasets, load_split_table
from cars_ray.errors import CarsRayError, ConfigError
from cars_ray.evaluate.evaluation import evaluate_checkpoint
from cars_ray.models import preprocessing_for
from cars_ray.outputs import replace_dir, write_csv
from cars_ray.train.checkpoint import META_FILE, MODEL_FILE, read_train_state
from cars_ray.train.loop import train_loop_per_worker


class TrainingError(CarsRayError):
    """Training ran but could not produce a usable model (e.g. the loss diverged)."""


@dataclass
class TrainOutcome:
    output_dir: str
    best_dir: str
    best_metrics: dict
    test_metrics: dict | None
    history: pd.DataFrame


def scaling_config(cfg: Config) -> ScalingConfig:
    """Workers and their resources; GPUs when the config or the cluster has them."""
    wants_gpu = cfg.train.use_gpu == "true" or (
        cfg.train.use_gpu == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    if wants_gpu and ray.cluster_resources().get("GPU", 0) < cfg.train.gpus_per_worker * cfg.train.num_workers:
        raise ConfigError(f"train.use_gpu=true asks for {cfg.train.num_workers} worker(s) x "
                          f"{cfg.train.gpus_per_worker} GPU but the Ray cluster has "
                          f"{ray.cluster_resources().get('GPU', 0):g} GPUs")
    resources = {"CPU": cfg.train.cpus_per_worker}
    if wants_gpu:
        resources["GPU"] = cfg.train.gpus_per_worker
    return ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=wants_gpu, resources_per_worker=resources)


def run_config(cfg: Config, output_dir: str, resume: bool) -> RunConfig:
    storage = os.path.abspath(cfg.train.storage_path or os.path.join(output_dir, "ray_results"))
    run_dir = os.path.join(storage, cfg.train.run_name)
    if resume and not os.path.isdir(run_dir):
        raise ConfigError(f"--resume: no earlier run {cfg.train.run_name!r} in {storage}")
    if not resume and os.path.isdir(run_dir):
        shutil.rmtree(run_dir)  # a fresh run must not pick up an old run's checkpoints
    return RunConfig(
        name=cfg.train.run_name,
        storage_path=storage,
        failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=cfg.train.select_metric,
                                           checkpoint_score_order=cfg.train.select_mode),
    )


@contextmanager
def ray_data_progress(enabled: bool):
    context = ray.data.DataContext.get_current()
    previous = context.enable_progress_bars
    context.enable_progress_bars = enabled
    try:
        yield
    finally:
        context.enable_progress_bars = previous


def fit(cfg: Config, output_dir: str, resume: bool = False, evaluate_test: bool = True,
        train_fn: Callable[[dict], None] = train_loop_per_worker) -> TrainOutcome:
    """Train with Ray Train, copy the best checkpoint to ``output_dir/best`` and evaluate it on test rows."""
    manifest, table = load_split_table(cfg.data)
    preprocessing = preprocessing_for(cfg.model, cfg.data.image_size, cfg.data.crop_pct)
    print(f"[cars_ray] {manifest.layout} data at {manifest.root}: {manifest.num_classes} classes; "
          + ", ".join(f"{name} {int((table.split == name).sum())}" for name in ("train", "val", "test")))
    datasets = build_training_datasets(table, preprocessing, cfg.data)
    trainer = TorchTrainer(
        train_fn,
        train_loop_config={"config": cfg.to_dict(), "class_names": manifest.class_names,
                           "preprocessing": preprocessing, "train_size": datasets["train"].count()},
        scaling_config=scaling_config(cfg),
        run_config=run_config(cfg, output_dir, resume),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train", "val"]),
    )
    # Decoding showed its progress above; per-epoch shard progress bars would only drown the epoch lines.
    with ray_data_progress(False):
        result = trainer.fit()
    if result.error is not None:
        raise result.error
    return finish(cfg, output_dir, result, manifest.class_names, table, evaluate_test)


def finish(cfg: Config, output_dir: str, result, class_names: list[str], table: pd.DataFrame,
           evaluate_test: bool) -> TrainOutcome:
    latest = result.checkpoint
    if latest is None:
        raise TrainingError("training reported no checkpoint")
    with latest.as_directory() as directory:
        history = pd.DataFrame(read_train_state(directory)["run_state"]["history"])
    stop_reason = str(history.stop_reason.iloc[-1]) if len(history) else ""
    if stop_reason.startswith("the training loss became"):
        raise TrainingError(stop_reason)
    best_checkpoint = result.get_best_checkpoint(cfg.train.select_metric, cfg.train.select_mode)
    best_metrics = next(m for c, m in result.best_checkpoints if c.path == best_checkpoint.path)
    best_dir = os.path.join(output_dir, "best")
    copy_inference_checkpoint(best_checkpoint, best_dir)
    write_csv(os.path.join(output_dir, "metrics.csv"), history)
    test_metrics = None
    test_rows = table[table.split == "test"]
    if evaluate_test and len(test_rows):
        test_metrics = evaluate_checkpoint(best_dir, test_rows, class_names, os.path.join(output_dir, "evaluation"),
                                           tta=cfg.train.eval_tta, title="test")
    return TrainOutcome(output_dir, best_dir, best_metrics, test_metrics, history)



def copy_inference_checkpoint(checkpoint: ray.train.Checkpoint, best_dir: str) -> None:
    """Copy the weights and meta of a training checkpoint (no optimizer state) to ``best_dir``, atomically."""
    with checkpoint.as_directory() as directory:
        staging = tempfile.mkdtemp(prefix=".best-", dir=os.path.dirname(os.path.abspath(best_dir)))
        try:
            for name in (MODEL_FILE, META_FILE):
                shutil.copy2(os.path.join(directory, name), staging)
            replace_dir(staging, best_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
