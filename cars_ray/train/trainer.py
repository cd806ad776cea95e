"""The one place a ``TorchTrainer`` is built, for ``fit`` and for every Tune trial: workers and their
resources, storage, failures, checkpoints kept.

Light on purpose: each Tune trial's process imports this module and ``cars_ray.train.loop`` (Ray Train and
torch), not the driver's evaluation, plots and reports.
"""

from __future__ import annotations

from typing import Callable, Sequence

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from cars_ray.config import Config
from cars_ray.errors import ConfigError
from cars_ray.train.loop import LoopSettings, train_loop_per_worker


def scaling_config(cfg: Config) -> ScalingConfig:
    """Workers and their resources; GPUs when the config or the cluster has them."""
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    wants_gpu = cfg.train.use_gpu == "true" or (cfg.train.use_gpu == "auto" and cluster_gpus > 0)
    if wants_gpu and cluster_gpus < cfg.train.gpus_per_worker * cfg.train.num_workers:
        raise ConfigError(f"train.use_gpu={cfg.train.use_gpu} asks for {cfg.train.num_workers} worker(s) x "
                          f"{cfg.train.gpus_per_worker:g} GPU (train.gpus_per_worker) but the Ray cluster has "
                          f"{cluster_gpus:g} GPUs")
    resources = {"CPU": cfg.train.cpus_per_worker}
    if wants_gpu:
        resources["GPU"] = cfg.train.gpus_per_worker
    return ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=wants_gpu, resources_per_worker=resources)


def train_run_config(cfg: Config, name: str, storage: str, callbacks: Sequence = ()) -> RunConfig:
    """Where a run keeps its checkpoints and how it survives worker failures; shared by fit and Tune trials.

    Every reported checkpoint is kept: the weights-only ones of new bests are small, and the
    latest full one must survive for a restart (Ray's num_to_keep would prune by score).
    """
    return RunConfig(name=name, storage_path=storage, callbacks=list(callbacks),
                     failure_config=FailureConfig(max_failures=cfg.train.max_failures),
                     checkpoint_config=CheckpointConfig(num_to_keep=None))


def build_trainer(cfg: Config, settings: LoopSettings, datasets: dict, run_config: RunConfig,
                  train_fn: Callable[[dict], None] = train_loop_per_worker) -> TorchTrainer:
    """The one place a TorchTrainer is built, for ``fit`` and for every Tune trial."""
    return TorchTrainer(
        train_fn,
        train_loop_config=settings.as_loop_config(),
        scaling_config=scaling_config(cfg),
        run_config=run_config,
        datasets=datasets or None,  # the streaming path passes none: each worker streams its rows per epoch
        # Every worker pulls each split whole, once, and takes its own share per epoch (cars_ray.data.feed).
        dataset_config=ray.train.DataConfig(datasets_to_split=[]),
    )
