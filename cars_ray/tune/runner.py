"""Driver side of a search: shared data, the Tuner (new or restored), and the result files."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass

import pandas as pd
import ray
from ray import tune

from cars_ray.config import Config
from cars_ray.data.loading import load_training_table, prepare_training_data
from cars_ray.data.manifest import Manifest
from cars_ray.errors import ConfigError, Interrupted
from cars_ray.evaluate.evaluation import EvaluationOptions, evaluate_checkpoint
from cars_ray.outputs import write_csv, write_figure, write_json
from cars_ray.plots import curves_figure, training_curves_figure
from cars_ray.preprocessing import Preprocessing
from cars_ray.report import write_report
from cars_ray.storage import remove_storage, storage_exists, storage_join
from cars_ray.train.tracking import TrackingTarget
from cars_ray.train.runner import (check_cluster_paths, copy_inference_checkpoint, protocol_line, resolved_pipeline,
                                     storage_dir, write_used_split)
from cars_ray.tune.search import (
    apply_trial_resources, build_search_space, check_feasible, curves, make_scheduler, make_search_alg, summarize,
    trial_driver, trial_history, trial_name,
)

EXPERIMENT = "tune"
TRIAL_DRIVER_MEMORY = 64 * 1024**2  # Tune needs a non-empty request; memory keeps the CPUs for the workers


@dataclass
class SearchOutcome:
    table: pd.DataFrame
    best_dir: str
    test_metrics: dict | None


class TrialLines(tune.Callback):
    """The quiet console of a search: one line per trial result (its epoch and the searched metric), one
    per failed trial; Tune's own status tables only with --verbose."""

    def __init__(self, metric: str, epochs: int, write=None):
        # Not print itself as a default: Tune pickles its callbacks with the experiment, and print may be
        # wrapped by then (pickle refuses a print that is not builtins.print).
        self.metric, self.epochs, self._write = metric, epochs, write

    def write(self, text: str) -> None:
        if self._write is None:
            print(text, flush=True)
        else:
            self._write(text)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
        top1 = result.get("val_top1")
        extra = f"  val_top1 {top1:.3f}" if isinstance(top1, (int, float)) and self.metric != "val_top1" else ""
        self.write(f"[cars_ray] trial {trial.trial_id} epoch {result.get('epoch', '?')}/{self.epochs}  "
                   f"{self.metric} {shown}{extra}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.write(f"[cars_ray] trial {trial.trial_id} failed; its error is in tune_results.csv and {trial.path}")


def run_search(cfg: Config, output_dir: str, resume: bool = False,
               data: tuple[Manifest, pd.DataFrame] | None = None, verbose: bool = False) -> SearchOutcome:
    """Decode once, run the trials (or continue them with ``resume``), write the results; ``data`` is what
    :func:`load_training_table` returned, when the caller checked it already. ``verbose``: Tune's status
    tables on the console too (otherwise one line per trial result, :class:`TrialLines`)."""
    started = time.perf_counter()
    space = build_search_space(cfg)
    TrackingTarget.resolve(cfg.train.tracking, output_dir, cfg.train.run_name)  # MLflow missing: fail now
    concurrency = check_feasible(apply_trial_resources(Config.from_dict(cfg.to_dict())))
    manifest, table = data or load_training_table(cfg)
    check_cluster_paths(cfg, output_dir, table)
    write_used_split(output_dir, table)
    preprocessing = Preprocessing.from_config(cfg)
    trial_cfg = apply_trial_resources(Config.from_dict(cfg.to_dict()))
    use_gpu = trial_cfg.train.use_gpu == "true" or (trial_cfg.train.use_gpu == "auto"
                                                    and ray.cluster_resources().get("GPU", 0) > 0)
    data = prepare_training_data(trial_cfg, table, preprocessing, use_gpu,
                                 concurrency * trial_cfg.train.num_workers * trial_cfg.train.cpus_per_worker,
                                 output_dir=output_dir)
    print(f"[cars_ray] {protocol_line(preprocessing, table)}", flush=True)
    print(f"[cars_ray] data path {data.choice.reason}"
          + (f"; stream source {data.stream_source}" if data.stream_source else ""), flush=True)
    if data.records is not None:
        print(f"[cars_ray] {data.records.summary()}", flush=True)
    cfg = resolved_pipeline(cfg, data.choice.pipeline)
    datasets = data.datasets
    storage = storage_dir(cfg, output_dir)
    shared = {"class_names": manifest.class_names, "preprocessing": preprocessing.to_dict(),
              "trial_storage": storage_join(storage, "trials"), "output_dir": output_dir,
              "split_rows": data.split_rows, "streams": data.streams,
              "stream_records": data.records.folders if data.records else None}
    # The trial's driver only waits on its TorchTrainer, whose workers hold the trial's CPUs/GPUs;
    # a driver holding a CPU of its own would deadlock small clusters.
    trainable = tune.with_resources(
        tune.with_parameters(trial_driver, base=cfg.to_dict(), shared=shared, datasets=datasets),
        {"CPU": 0, "memory": TRIAL_DRIVER_MEMORY})
    experiment_dir = storage_join(storage, EXPERIMENT)
    if not resume and storage_exists(experiment_dir):
        raise ConfigError(f"train.storage_path {storage} already holds a search ({EXPERIMENT}/); continue it with "
                          "--resume or give another train.storage_path")
    if resume and not tune.Tuner.can_restore(experiment_dir):
        # tune.py checked that the output folder holds this search: it stopped before Tune saved its state.
        print(f"[cars_ray] --resume: the search saved no state in {experiment_dir} before it stopped; starting it afresh")
        if storage_exists(experiment_dir):
            remove_storage(experiment_dir)
        resume = False
    if resume:
        tuner = tune.Tuner.restore(experiment_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(metric=cfg.tune.metric, mode=cfg.tune.mode, num_samples=cfg.tune.num_samples,
                                        scheduler=make_scheduler(cfg), search_alg=make_search_alg(cfg, concurrency),
                                        max_concurrent_trials=concurrency,
                                        # Not reused: a trial ASHA stops is still inside TorchTrainer.fit(),
                                        # which outlives the 2 s Tune's reset waits for, and the next trial
                                        # given that process fails with "reuse requires reset_config()".
                                        reuse_actors=False),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=storage, verbose=None if verbose else 0,
                                      callbacks=[TrialLines(cfg.tune.metric, cfg.train.epochs)]),
        )
    # Tune's new output engine prints its experiment table even at verbose=0 (ray/tune/experimental/output.py,
    # experiment_started); its legacy engine at verbose=0 prints nothing. Our TrialLines callback is the console.
    with environment({} if verbose else {"RAY_AIR_NEW_OUTPUT": "0"}):
        results, interrupted = fit_watching_ctrl_c(tuner)
    if interrupted:
        raise Interrupted(f"the search was stopped before its end; its state is saved in {experiment_dir}: "
                          f"continue it with --resume --output-dir {output_dir}")
    return write_results(cfg, output_dir, results, manifest.class_names, table, started)


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """Environment variables set for the block only (the driver's own, read by Tune when fit() starts)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fit_watching_ctrl_c(tuner: tune.Tuner) -> tuple[tune.ResultGrid, bool]:
    """(results, interrupted). Tune turns a Ctrl-C into a normal return (state saved, trials marked
    TERMINATED); its handler then puts back the one it replaced, which is how we tell the cases apart."""
    watching = threading.current_thread() is threading.main_thread() and os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") == "0"
    before = signal.getsignal(signal.SIGINT) if watching else None
    results = tuner.fit()
    interrupted = watching and signal.getsignal(signal.SIGINT) is before
    if watching:
        signal.signal(signal.SIGINT, before)  # Tune leaves its handler installed after a normal end
    return results, interrupted


def write_results(cfg: Config, output_dir: str, results: tune.ResultGrid, class_names: list[str],
                  table: pd.DataFrame, started: float) -> SearchOutcome:
    summary = summarize(results, cfg)
    write_csv(os.path.join(output_dir, "tune_results.csv"), summary)
    stopped = set(summary.loc[summary.stopped_by_scheduler, "trial_id"])
    figure = curves_figure(curves(results, cfg.tune.metric), stopped, cfg.tune.metric, cfg.train.epochs)
    write_figure(os.path.join(output_dir, "tune.png"), figure)
    ranked = summary[summary.best_checkpoint.astype(bool)]
    if ranked.empty:
        raise ConfigError("no trial reported a checkpoint; see tune_results.csv for the trials' errors")
    best_dir = os.path.join(output_dir, "best")
    copy_inference_checkpoint(ray.train.Checkpoint(ranked.iloc[0].best_checkpoint), best_dir)
    best_history = next(trial_history(r) for r in results if trial_name(r) == ranked.iloc[0].trial_id)
    write_figure(os.path.join(output_dir, "curves.png"),
                 training_curves_figure(best_history, int(ranked.iloc[0].best_epoch)))
    test_rows = table[table.split == "test"]
    test_metrics = None
    if len(test_rows):
        test_metrics = evaluate_checkpoint(best_dir, test_rows, class_names, os.path.join(output_dir, "evaluation"),
                                           EvaluationOptions(tta=cfg.train.eval_tta, title="test (best trial)"))
    write_report(output_dir, f"cars_ray search: {len(summary)} trials of {cfg.model.backbone}, {cfg.data.image_size} px")
    write_json(os.path.join(output_dir, SEARCH_SUMMARY), search_summary(cfg, summary, ranked.iloc[0], test_metrics,
                                                                       time.perf_counter() - started))
    return SearchOutcome(summary, best_dir, test_metrics)


SEARCH_SUMMARY = "search.json"


def search_summary(cfg: Config, summary: pd.DataFrame, best: pd.Series, test: dict | None, seconds: float) -> dict:
    """O/search.json: what pipelines/compare.py lines up for a search, as run.json is for a run. Wall time is
    the search's (decoding, every trial, the best trial's test evaluation; the last session when resumed);
    images/s the best trial's mean over its epochs, comparable with a run's."""
    test = test or {}
    metric = f"best_{cfg.tune.metric}"
    return {"trials": int(len(summary)), "best_trial": str(best.trial_id), "backbone": cfg.model.backbone,
            "image_size": cfg.data.image_size, "best_epoch": int(best.best_epoch), "metric": cfg.tune.metric,
            metric: float(best[metric]), "test_top1": test.get("top1"), "test_images": test.get("num_images"),
            "images_per_second": float(best.images_per_second), "wall_seconds": round(seconds, 1)}
