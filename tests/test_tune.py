"""Ray Tune search on generated data with a tiny model: results, ASHA, best choice, errors.

A search interrupted with Ctrl-C and resumed after the head restarted: tests/test_multinode.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from cars_ray.config import load_config
from cars_ray.errors import ConfigError
from helpers.data import REPO, write_class_folders

pytestmark = pytest.mark.slow
GRID = "{optim.lr: {grid: [0.02, 0.01, 1.0e-7]}}"  # the last one can hardly learn: ASHA must cut it


@pytest.fixture(scope="module")
def tune_root(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("tune") / "data", 20, (40, 32))


def tune_overrides(root, *extra):
    return [f"data.root_dir={root}", "data.image_size=32", "data.batch_size=8", "data.augment=none",
            "data.val_fraction=0.25", "data.test_fraction=0.25", "model.backbone=test_efficientnet",
            "model.weights=none", "optim.late_lr=3.0e-3", "optim.early_lr=3.0e-3", "optim.schedule=none",
            "train.epochs=2", "train.channels_last=false", "train.early_stop_patience=0",
            f"tune.search_space={GRID}", "tune.num_samples=1", "tune.grace_period=1", "tune.reduction_factor=2",
            "tune.max_concurrent_trials=1", "tune.metric=val_loss", "tune.mode=min", *extra]


def test_search_writes_results_and_asha_stops_the_hopeless_trial(ray_local, tune_root, tmp_path, capsys):
    from cars_ray.tune.runner import run_search

    # Two trials at a time (one CPU each): the hopeless one starts last, when earlier trials' first epochs
    # are in for ASHA to compare it with.
    cfg = load_config("configs/tune_demo.yaml", tune_overrides(tune_root, "tune.max_concurrent_trials=2"))
    outcome = run_search(cfg, str(tmp_path))
    console = capsys.readouterr().out  # quiet: a line per trial result, no Tune status tables
    assert "[cars_ray] trial " in console and "Trial status" not in console and "+---" not in console, console[-3000:]
    table = pd.read_csv(tmp_path / "tune_results.csv")
    assert len(table) == 3 and (tmp_path / "tune.png").stat().st_size > 10_000
    assert table.error.isna().all(), table[["trial_id", "error"]].to_string()  # e.g. a process reused too early
    hopeless = table[table["param.optim.lr"] < 1e-6].iloc[0]
    assert hopeless.stopped_by_scheduler and hopeless.epochs_run < 2
    assert table.stopped_by_scheduler.sum() >= 1
    best = table.loc[table.best_val_loss.idxmin()]
    meta = json.loads((tmp_path / "best" / "meta.json").read_text())
    assert meta["config"]["optim"]["lr"] == pytest.approx(best["param.optim.lr"])
    assert meta["metrics"]["val_loss"] == pytest.approx(best.best_val_loss)
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.png", "confused_pairs.csv"):
        assert (tmp_path / "evaluation" / name).exists()
    assert outcome.test_metrics["num_images"] == 20
    assert list((tmp_path / "ray_results" / "tune").glob("*/events.out.tfevents.*")), "TensorBoard logs"
    assert (tmp_path / "curves.png").exists() and "Trials" in (tmp_path / "report.html").read_text()
    search = json.loads((tmp_path / "search.json").read_text())  # compare.py's figures for a search
    assert search["best_trial"] == table.trial_id.iloc[0] and search["wall_seconds"] > 0
    assert search["images_per_second"] == pytest.approx(table.images_per_second.iloc[0]) and search["images_per_second"] > 0
    assert len(pd.read_csv(tmp_path / "split.csv")) == len(pd.read_csv(tmp_path / "split.csv").drop_duplicates("path"))

    # --resume of a search whose trials all finished reruns none of them (an interrupted search with some
    # trials running: tests/test_multinode.py).
    checkpoints = sorted((tmp_path / "ray_results" / "trials").glob("*/checkpoint_*"))
    run_search(cfg, str(tmp_path), resume=True)
    again = pd.read_csv(tmp_path / "tune_results.csv")
    assert again[["trial_id", "epochs_run", "best_val_loss"]].equals(table[["trial_id", "epochs_run", "best_val_loss"]])
    assert sorted((tmp_path / "ray_results" / "trials").glob("*/checkpoint_*")) == checkpoints


@pytest.mark.parametrize("override, message", [
    ("tune.search_space={}", "tune.search_space is empty"),
    ("tune.search_space={optim.lr: {loguniform: [0, 1]}}", "loguniform needs 0 < low < high"),
    ("tune.search_space={optim.nope: {choice: [1]}}", "search space names unknown key 'optim.nope'"),
    ("tune.cpus_per_trial=64", "one trial needs 64 CPU"),
    ("tune.gpus_per_trial=0.5", "0.5 GPU"),
])
def test_errors_fail_early(ray_local, tune_root, tmp_path, override, message):
    from cars_ray.tune.runner import run_search

    cfg = load_config("configs/tune_demo.yaml", tune_overrides(tune_root, override))
    started = time.time()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        run_search(cfg, str(tmp_path))
    assert time.time() - started < 30


def test_a_trial_process_imports_no_model_code():
    """Every trial's process imports the trial driver (cars_ray.tune.search), hence the TorchTrainer's module and
    the loop's: the model's code and the driver's reports stay out (seconds of start-up a trial on 2 cores)."""
    heavy = ("timm", "torchvision", "sklearn", "matplotlib")
    code = f"import sys, cars_ray.tune.search; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]
