"""Learning-rate search on Ray Tune around the unchanged training loop.

Ray 2.60 (Train V2) combines Train and Tune with a *function trainable that launches a
TorchTrainer*: each trial runs ``trial_driver``, which starts a ``TorchTrainer`` on the trial's
config, and ``TuneReportCallback`` forwards every epoch's metrics (and checkpoint path) to Tune,
so ASHA can stop bad trials early. Images are decoded once, before the search, and shared by all
trials.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from cars_ray.config import Config
from cars_ray.errors import ConfigError
from cars_ray.train.loop import LoopSettings
from cars_ray.train.trainer import build_trainer, train_run_config
from cars_ray.train.tracking import TrackingTarget

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint", "grid")


def build_search_space(cfg: Config) -> dict[str, Any]:
    """``{"optim.lr": {"loguniform": [1e-4, 1e-2]}, ...}`` from the config -> Tune domains."""
    space = cfg.tune.search_space
    if not space:
        raise ConfigError("tune.search_space is empty; name at least one key, e.g. optim.lr: {loguniform: [1e-4, 1e-2]}")
    domains = {}
    for key, spec in space.items():
        probe = Config()
        try:
            probe.set(key, _sample_value(spec, key), "tune.search_space")
        except ConfigError as err:
            raise ConfigError(str(err).replace("unknown key", "search space names unknown key")) from None
        (kind, args), = spec.items()
        domains[key] = {"loguniform": lambda a: tune.loguniform(*a), "uniform": lambda a: tune.uniform(*a),
                        "choice": tune.choice, "randint": lambda a: tune.randint(*a),
                        "grid": tune.grid_search}[kind](args)
    return domains


def _sample_value(spec: Any, key: str) -> Any:
    """Validate one distribution spec and return a representative value of it."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"tune.search_space.{key} must be one of {{{' | '.join(DISTRIBUTIONS)}: [...]}}, got {spec!r}")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"tune.search_space.{key}: unknown distribution {kind!r}; expected one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"tune.search_space.{key}: {kind} needs a list of values, got {args!r}")
    if kind in ("choice", "grid"):
        return args[0]
    try:
        low, high = (float(v) for v in args)
    except (TypeError, ValueError):
        raise ConfigError(f"tune.search_space.{key}: {kind} needs [low, high] numbers, got {args!r}") from None
    if not low < high or (kind == "loguniform" and low <= 0):
        raise ConfigError(f"tune.search_space.{key}: {kind} needs 0 < low < high, got {args!r}"
                          if kind == "loguniform" else f"tune.search_space.{key}: {kind} needs low < high, got {args!r}")
    return int(low) if kind == "randint" else low


def apply_trial_resources(cfg: Config) -> Config:
    """Map tune.cpus_per_trial / tune.gpus_per_trial (per training worker of a trial) onto train.*.

    Unset (null), they leave train.* as it is: train.use_gpu=auto then trains on the GPUs of a
    cluster that has them, with train.gpus_per_worker each.
    """
    if cfg.tune.cpus_per_trial is not None:
        cfg.train.cpus_per_worker = cfg.tune.cpus_per_trial
    if cfg.tune.gpus_per_trial is not None:
        cfg.train.use_gpu = "true" if cfg.tune.gpus_per_trial > 0 else "false"
        cfg.train.gpus_per_worker = cfg.tune.gpus_per_trial if cfg.tune.gpus_per_trial > 0 else cfg.train.gpus_per_worker
    return cfg


def check_feasible(cfg: Config) -> int:
    """Fail early on resources the cluster can never give; returns how many trials run at once."""
    available = ray.cluster_resources()
    cluster_gpus = available.get("GPU", 0)
    wants_gpu = cfg.train.use_gpu == "true" or (cfg.train.use_gpu == "auto" and cluster_gpus > 0)
    cpus_needed = cfg.train.cpus_per_worker * cfg.train.num_workers
    gpus_needed = cfg.train.gpus_per_worker * cfg.train.num_workers if wants_gpu else 0.0
    if cpus_needed > available.get("CPU", 0) or gpus_needed > cluster_gpus:
        raise ConfigError(f"one trial needs {cpus_needed:g} CPU and {gpus_needed:g} GPU (tune.cpus_per_trial, "
                          f"tune.gpus_per_trial x train.num_workers) but the Ray cluster has "
                          f"{available.get('CPU', 0):g} CPU and {cluster_gpus:g} GPU")
    limits = [math.floor(available.get("CPU", 0) / cpus_needed)]
    if gpus_needed:
        limits.append(math.floor(cluster_gpus / gpus_needed + 1e-9))
    fits = max(1, min(limits))
    return min(fits, cfg.tune.max_concurrent_trials) if cfg.tune.max_concurrent_trials > 0 else fits


def trial_config(base: dict, params: dict[str, Any]) -> Config:
    """The training config of one trial: the base plus the sampled keys and the trial's resources."""
    cfg = Config.from_dict(base, source="tune base config")
    for key, value in params.items():
        cfg.set(key, value, "tune trial")
    return apply_trial_resources(cfg)


def trial_driver(params: dict[str, Any], base: dict, shared: dict, datasets: dict) -> None:
    """One trial: the same TorchTrainer as train.py on the trial's config, reporting each epoch to Tune."""
    cfg = trial_config(base, params)
    ray.data.DataContext.get_current().enable_progress_bars = False  # per-epoch shard bars x trials = noise
    # TensorBoard: Tune writes every trial's event files itself; MLflow: one run per trial, one experiment per search.
    tracking = (TrackingTarget.resolve("mlflow", shared["output_dir"], f"{cfg.train.run_name}_search")
                if cfg.train.tracking == "mlflow" else None)
    settings = LoopSettings(cfg.to_dict(), shared["class_names"], shared["preprocessing"], tracking=tracking,
                            report_history_on_resume=True, split_rows=shared["split_rows"], streams=shared["streams"],
                            stream_records=shared["stream_records"])
    run_config = train_run_config(cfg, f"trial_{tune.get_context().get_trial_id()}", shared["trial_storage"],
                                  callbacks=[TuneReportCallback()])
    build_trainer(cfg, settings, datasets, run_config).fit()


def make_search_alg(cfg: Config, concurrency: int):
    """Random search by default; Optuna or HyperOpt when asked for and installed."""
    if cfg.tune.search_alg == "random":
        return None
    try:
        if cfg.tune.search_alg == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            searcher = OptunaSearch(metric=cfg.tune.metric, mode=cfg.tune.mode)
        else:
            from ray.tune.search.hyperopt import HyperOptSearch

            searcher = HyperOptSearch(metric=cfg.tune.metric, mode=cfg.tune.mode)
    except (ImportError, AssertionError):
        raise ConfigError(f"tune.search_alg={cfg.tune.search_alg} needs the {cfg.tune.search_alg} package "
                          f"(pip install {cfg.tune.search_alg}), or use random") from None
    return tune.search.ConcurrencyLimiter(searcher, max_concurrent=concurrency)


def make_scheduler(cfg: Config):
    if cfg.tune.scheduler == "fifo":
        return None
    # Epochs, not Tune's report count: a restarted trial reports its earlier epochs again (report_history_on_resume).
    return tune.schedulers.ASHAScheduler(time_attr="epoch", max_t=cfg.train.epochs,
                                         grace_period=cfg.tune.grace_period, reduction_factor=cfg.tune.reduction_factor)


def summarize(results: tune.ResultGrid, cfg: Config) -> pd.DataFrame:
    """One row per trial: parameters, best metric, epochs run, mean training images/s over its epochs,
    and whether the scheduler stopped it."""
    rows = []
    sign = 1 if cfg.tune.mode == "max" else -1
    for result in results:
        history = trial_history(result)
        params = {f"param.{k}": v for k, v in (result.config or {}).items()}
        epochs = int(history.epoch.max()) if "epoch" in history else 0
        early = bool(history.stop_reason.iloc[-1]) if "stop_reason" in history and len(history) else False
        best_row = best_kept_row(history, cfg.tune.metric, sign) if cfg.tune.metric in history else None
        rows.append({
            "trial_id": trial_name(result),
            "trial_dir": result.path,
            **params,
            f"best_{cfg.tune.metric}": float(best_row[cfg.tune.metric]) if best_row is not None else float("nan"),
            "best_epoch": int(best_row["epoch"]) if best_row is not None else 0,
            "best_checkpoint": best_row.get("checkpoint_path", "") if best_row is not None else "",
            "epochs_run": epochs,
            "images_per_second": float(history.images_per_second.mean()) if "images_per_second" in history
            and len(history) else float("nan"),
            "stopped_by_scheduler": epochs < cfg.train.epochs and not early and result.error is None,
            "stopped_by_early_stopping": early,
            "error": "" if result.error is None else str(result.error).splitlines()[0][:200],
        })
    table = pd.DataFrame(rows)
    return table.sort_values(f"best_{cfg.tune.metric}", ascending=cfg.tune.mode == "min", na_position="last")


def curves(results: tune.ResultGrid, metric: str) -> dict[str, tuple[list, list]]:
    """Per trial, (epochs, metric values) for the curves plot."""
    out = {}
    for result in results:
        history = trial_history(result)
        if metric in history:
            out[trial_name(result)] = (history.epoch.tolist(), history[metric].tolist())
    return out


def trial_history(result) -> pd.DataFrame:
    """A trial's epochs as Tune recorded them, one row per epoch: a restarted trial reports the epochs it
    resumed with again (Tune appends them), and the last report of an epoch is kept."""
    history = result.metrics_dataframe
    if history is None or "epoch" not in history:
        return pd.DataFrame()
    return history.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def trial_name(result) -> str:
    """Tune's short trial id (it adds ``trial_id`` to every reported row)."""
    if result.metrics and "trial_id" in result.metrics:
        return str(result.metrics["trial_id"])
    return os.path.basename(result.path or "")


def best_kept_row(history: pd.DataFrame, metric: str, sign: int) -> pd.Series:
    """The best epoch that has a checkpoint (every new best writes its weights; local paths must exist)."""
    rows = history
    if "checkpoint_path" in rows:
        kept = rows.checkpoint_path.map(lambda p: isinstance(p, str) and p != "" and
                                        (not p.startswith("/") or os.path.exists(p)))
        rows = rows[kept] if kept.any() else rows
    return rows.loc[(sign * rows[metric]).idxmax()]
