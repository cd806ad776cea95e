"""Training on Ray Train with a tiny model on generated data: learning, workers, faults, resume, errors.

A node (not a worker process) lost mid-run, and resuming from a fresh driver: tests/test_multinode.py. The
strong recipe's options end to end (configs/strong.yaml): tests/test_gpu_suite.py; with a frozen early
backbone, without Ray: tests/test_training_run.py."""

from __future__ import annotations

import functools
import os
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray.cloudpickle

from cars_ray.config import load_config
from cars_ray.train.loop import train_loop_per_worker
from cars_ray.train.runner import fit
from helpers.data import (CLASS_NAMES, class_colour, folder_of, make_boxed_images, make_image, write_class_folders,
                          write_names_csv)
from helpers.entry_points import call_pipeline

pytestmark = pytest.mark.slow
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need this module's loops


@pytest.fixture(scope="module")
def train_root(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("train") / "data", 16, (48, 40))


def tiny_config(root, output_dir, *overrides):
    return load_config("configs/demo.yaml", [
        f"data.root_dir={root}", "data.image_size=32", "data.batch_size=8", "data.eval_batch_size=16",
        "data.augment=light", "data.val_fraction=0.25", "data.test_fraction=0.25",
        "model.backbone=test_efficientnet", "model.weights=none", "optim.warmup_epochs=0", "optim.schedule=none",
        "optim.lr=3e-3", "optim.late_lr=3e-3", "optim.early_lr=3e-3", "train.epochs=2", "train.channels_last=false",
        f"train.output_dir={output_dir}", *overrides])


@pytest.fixture(scope="module")
def baseline_run(ray_local, train_root, tmp_path_factory):
    """One worker, 2 epochs, no augmentation: checked below, compared with 2 workers, and its best/
    checkpoint shared by the evaluation tests (each fit costs tens of seconds of process start-up)."""
    output = tmp_path_factory.mktemp("baseline")
    return fit(tiny_config(train_root, output, "data.augment=none"), str(output))


def test_two_epochs_lower_the_loss_and_write_outputs(baseline_run):
    output = Path(baseline_run.output_dir)
    history = baseline_run.history
    assert list(history.epoch) == [1, 2]
    assert history.train_loss.iloc[1] < history.train_loss.iloc[0]
    assert {"train_loss", "val_loss", "val_top1", "lr_classifier", "images_per_second"} <= set(history.columns)
    assert (output / "best" / "model.pt").exists() and (output / "metrics.csv").exists()
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.png", "confused_pairs.csv", "errors.png", "per_class.png"):
        assert (output / "evaluation" / name).exists(), name
    assert baseline_run.test_metrics["num_images"] == 16
    used = pd.read_csv(output / "split.csv")
    assert list(used.columns) == ["path", "class_id", "split"] and len(used) == 64
    assert used.split.value_counts().to_dict() == {"train": 32, "val": 16, "test": 16}
    assert (output / "curves.png").stat().st_size > 10_000 and (output / "report.html").exists()
    assert json.loads((output / "run.json").read_text())["epochs_run"] == 2
    assert list((output / "tensorboard").glob("events.out.tfevents.*")), "TensorBoard scalars and figures"
    from cars_ray.train import EPOCH_METRICS

    assert set(EPOCH_METRICS) <= set(history.columns)
    checkpoints = sorted(p for p in (output / "ray_results" / "demo").glob("checkpoint_*") if p.is_dir())
    assert len(checkpoints) == 2, "epoch 1: weights of a new best; epoch 2: the last, full"
    assert not (checkpoints[0] / "train_state.pt").exists() and (checkpoints[0] / "model.pt").exists()
    assert (checkpoints[1] / "train_state.pt").exists()


def test_two_workers_match_one(baseline_run, train_root, tmp_path):
    one = baseline_run.history.iloc[-1]
    cfg = tiny_config(train_root, tmp_path, "train.num_workers=2", "data.batch_size=4", "data.augment=none")
    two = fit(cfg, str(tmp_path), evaluate_test=False).history.iloc[-1]
    assert two.val_images == one.val_images == 16
    assert two.train_images == one.train_images
    assert abs(two.val_loss - one.val_loss) < 0.35
    assert abs(two.val_top1 - one.val_top1) <= 0.25


class StopAfterFirstEpoch(Exception):
    pass


def stop_after_first_report(loop_config: dict) -> None:
    import cars_ray.train.loop as loop

    original = loop.report

    def report_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        time.sleep(3)  # the controller takes reports in asynchronously; a Ctrl-C comes later than this
        raise StopAfterFirstEpoch("stopped by the test")

    loop.report = report_then_stop
    train_loop_per_worker(loop_config)


def record_reports(record_file: str, loop_config: dict) -> None:
    """The loop as a restarted Tune trial runs it (``report_history_on_resume``), writing what it reports."""
    import dataclasses

    import ray.train

    original = ray.train.report

    def record(metrics, *args, **kwargs):
        with open(record_file, "a") as log:
            log.write(json.dumps(metrics, default=str) + "\n")
        original(metrics, *args, **kwargs)

    ray.train.report = record  # this worker process ends with the run
    train_loop_per_worker({"settings": dataclasses.replace(loop_config["settings"], report_history_on_resume=True)})


def test_resume_after_stop_finishes_same_epoch_count(ray_local, train_root, tmp_path):
    cfg = tiny_config(train_root, tmp_path, "train.epochs=3", "train.max_failures=0", "train.checkpoint_every=1")
    with pytest.raises(Exception):
        fit(cfg, str(tmp_path), evaluate_test=False, train_fn=stop_after_first_report)
    first = [path for path in (tmp_path / "ray_results" / cfg.train.run_name).glob("checkpoint_*") if path.is_dir()]
    # Resumed as a restarted Tune trial runs it: the epoch the checkpoint holds is reported again first.
    record_file = tmp_path / "reports.jsonl"
    outcome = fit(cfg, str(tmp_path), resume=True, evaluate_test=False,
                  train_fn=functools.partial(record_reports, str(record_file)))
    assert list(outcome.history.epoch) == [1, 2, 3]
    assert list(outcome.history.resumes) == [0, 1, 1], "epochs 2 and 3 ran after resuming from epoch 1"
    reports = [json.loads(line) for line in record_file.read_text().splitlines()]
    assert [(r["epoch"], r.get("replayed", False)) for r in reports] == [(1, True), (2, False), (3, False)]
    assert [Path(reports[0]["checkpoint_path"])] == first, "with the path of its committed checkpoint"


def nan_on_rank_one_at_a_check(loop_config: dict) -> None:
    """Rank 1's loss turns NaN exactly at a finiteness check (step 2 of epoch 1) while rank 0's is still
    finite there: ranks that decided alone would part ways (rank 0 into the next step's all-reduce)."""
    import cars_ray.train.run as run_module

    run_module.NAN_CHECK_EVERY = 2

    class PoisonedRun(run_module.TrainingRun):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if ray.train.get_context().get_world_rank() == 1:
                clean = self.criterion
                self.criterion = lambda logits, targets: clean(logits, targets) * (
                    float("nan") if self.state.step == 1 else 1.0)

    run_module.TrainingRun = PoisonedRun  # the loop takes it from there; this worker ends with the run
    train_loop_per_worker(loop_config)


@pytest.mark.timeout(300, method="thread")  # a hang here would otherwise last forever
def test_non_finite_loss_on_one_rank_stops_every_rank_with_a_clear_message(ray_local, train_root, tmp_path):
    from cars_ray.train.runner import TrainingError

    cfg = tiny_config(train_root, tmp_path, "train.num_workers=2", "data.batch_size=4", "data.augment=none",
                      "train.epochs=2", "train.max_failures=0")
    with pytest.raises(TrainingError, match="loss became nan in epoch 1; lower optim.lr or set optim.grad_clip"):
        fit(cfg, str(tmp_path), evaluate_test=False, train_fn=nan_on_rank_one_at_a_check)


def one_line_error(call: tuple[int, str, str]) -> str:
    """The last line of a pipeline that failed before starting Ray (run in this process: call_pipeline)."""
    code, stdout, stderr = call
    assert code == 2, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def test_bad_config_key_and_missing_data_fail_in_one_sentence(tmp_path):
    line = one_line_error(call_pipeline("train.py", "--config", "configs/demo.yaml", "optim.learning_rate=1"))
    assert line.startswith("error: command line: unknown key 'optim.learning_rate'")
    line = one_line_error(call_pipeline("train.py", "--config", "configs/demo.yaml", f"data.root_dir={tmp_path}/none",
                                        "--output-dir", str(tmp_path / "o")))
    assert line == f"error: data.root_dir {tmp_path}/none does not exist"
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data:\n  image_size: [1\n")
    assert one_line_error(call_pipeline("train.py", "--config", str(bad_yaml))).startswith(f"error: {bad_yaml}:")


def test_checkpoint_with_other_class_count_fails_clearly(baseline_run, tmp_path):
    three = tmp_path / "three"
    for c, name in enumerate(CLASS_NAMES[:3]):
        make_image(three / folder_of(name) / "a.jpg", (48, 40), class_colour(c))
    write_names_csv(three / "names.csv", CLASS_NAMES[:3])
    line = one_line_error(call_pipeline("evaluate.py", "--checkpoint", baseline_run.best_dir, "--root-dir", str(three),
                                        "--output-dir", str(tmp_path / "ev")))
    assert line == f"error: the checkpoint has 4 classes but {three} has 3"
    assert not (tmp_path / "ev").exists()


def test_whole_image_protocol_trains_evaluates_and_records_it(ray_local, tmp_path):
    """data.use_boxes=false through train.py on photos with boxes (a csv layout): the run says it trains on whole
    images and that the boxes are not used, and the checkpoint and run.json record the protocol, which every
    later decode of that checkpoint (its test evaluation, evaluate.py, export, Serve) reads from it."""
    root = tmp_path / "data"
    records = make_boxed_images(root / "imgs", 32, seed=7)
    (root / "boxes.csv").write_text("path,label,x1,y1,x2,y2\n" + "".join(
        f"imgs/{r['fname']},{r['class']},{r['bbox_x1']},{r['bbox_y1']},{r['bbox_x2']},{r['bbox_y2']}\n" for r in records))
    write_names_csv(root / "names.csv")
    out = tmp_path / "run"
    code, stdout, stderr = call_pipeline(
        "train.py", "--config", "configs/demo.yaml", "--output-dir", str(out), f"data.root_dir={root / 'boxes.csv'}",
        "data.use_boxes=false", "model.backbone=test_efficientnet", "model.weights=none", "data.image_size=32",
        "data.batch_size=8", "data.augment=none", "data.val_fraction=0.25", "data.test_fraction=0.25",
        "train.channels_last=false", "train.epochs=1")
    assert code == 0, stdout[-3000:] + stderr[-3000:]
    console = stdout + ((out / "logs" / "run.log").read_text() if (out / "logs" / "run.log").exists() else "")
    assert "protocol: whole images (data.use_boxes false): the boxes of 32 of 32 rows are not used" in console
    meta = json.loads((out / "best" / "meta.json").read_text())
    assert meta["preprocessing"]["use_boxes"] is False
    assert json.loads((out / "run.json").read_text())["protocol"] == "whole images"
    assert (out / "evaluation" / "metrics.json").exists()


def test_evaluate_pipeline_on_split_file(baseline_run, train_root, tmp_path):
    split = pd.DataFrame({"path": [f"{folder_of(n)}/{c}_{i:03d}.jpg" for c, n in enumerate(CLASS_NAMES) for i in range(16)],
                          "class_id": [c + 1 for c in range(4) for _ in range(16)],
                          "split": (["train"] * 12 + ["test"] * 4) * 4})
    split.to_csv(tmp_path / "split.csv", index=False)
    code, _, stderr = call_pipeline("evaluate.py", "--checkpoint", baseline_run.best_dir, "--root-dir", str(train_root),
                                    "--split-file", str(tmp_path / "split.csv"), "--tta", "--output-dir", str(tmp_path / "ev"))
    assert code == 0, stderr[-3000:]
    import json

    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["num_images"] == 16 and metrics["tta"] is True
    assert set(metrics) >= {"top1", "top5", "precision_macro", "recall_macro", "f1_macro", "balanced_accuracy"}
    per_class = pd.read_csv(tmp_path / "ev" / "per_class.csv")
    assert list(per_class.class_name) == CLASS_NAMES and per_class.support.sum() == 16
    assert np.isclose(metrics["top1"], (pd.read_csv(tmp_path / "ev" / "predictions.csv").eval("true_id == predicted_id")).mean())



def test_a_runs_test_rows_are_evaluated_again_from_its_split_file(baseline_run, train_root, tmp_path):
    """The README: `evaluate.py --root-dir <data> --split-file O/split.csv --split test` gives the run's test figure."""
    code, stdout, stderr = call_pipeline("evaluate.py", "--checkpoint", baseline_run.best_dir, "--root-dir", str(train_root),
                                         "--split-file", os.path.join(baseline_run.output_dir, "split.csv"), "--split", "test",
                                         "--output-dir", str(tmp_path / "again"))
    assert code == 0, stderr[-3000:]
    wrote = stdout.strip().splitlines()[-1]  # every file it wrote, and only those
    assert wrote.startswith("wrote ") and wrote.endswith(f" to {tmp_path / 'again'}")
    named = wrote[len("wrote "):-len(f" to {tmp_path / 'again'}")].split(", ")
    assert sorted(named) == sorted(p.name for p in (tmp_path / "again").iterdir() if p.name != "logs" and not p.name.startswith("."))  # the marker is hidden
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert metrics["num_images"] == baseline_run.test_metrics["num_images"] == 16
    assert metrics["top1"] == pytest.approx(baseline_run.test_metrics["top1"])


def test_int8_export_kept_with_good_calibration_refused_with_bad(baseline_run, train_root, tmp_path):
    """Static int8 of the trained baseline: calibrated on its training images it keeps top-1 on the val rows;
    calibrated on featureless grey frames its activation ranges are wrong, and the export is refused, nothing written."""
    from PIL import Image

    split = pd.DataFrame({"path": [f"{folder_of(n)}/{c}_{i:03d}.jpg" for c, n in enumerate(CLASS_NAMES) for i in range(16)],
                          "class_id": [c + 1 for c in range(4) for _ in range(16)],
                          "split": (["train"] * 8 + ["val"] * 8) * 4})
    split.to_csv(tmp_path / "split.csv", index=False)
    check = ["--root-dir", str(train_root), "--split-file", str(tmp_path / "split.csv"), "--max-drop", "3"]
    code, out, err = call_pipeline("export.py", "--checkpoint", baseline_run.best_dir, "--out", str(tmp_path / "good.onnx"),
                                   "--int8", "--calibration-dir", str(train_root), *check)
    assert code == 0, out + err
    assert "32 'val' images" in out and "wrote" in out and (tmp_path / "good.onnx").is_file()
    assert "WARNING" not in err and "Quantized bias" not in out + err  # the quantizer's log lines: off the console
    from cars_ray.inference.onnx import is_int8_onnx

    assert is_int8_onnx(str(tmp_path / "good.onnx"))
    (tmp_path / "grey").mkdir()
    for i in range(8):
        Image.new("RGB", (48, 40), (128, 128, 128)).save(tmp_path / "grey" / f"{i}.png")
    code, out, err = call_pipeline("export.py", "--checkpoint", baseline_run.best_dir, "--out", str(tmp_path / "bad.onnx"),
                                   "--int8", "--calibration-dir", str(tmp_path / "grey"), *check)
    assert code == 1 and "more than --max-drop 3" in out and "was not written" in out, out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.onnx", "grey", "split.csv"]


def test_streaming_two_workers_resume_redo_the_epoch_with_equal_full_batches(ray_local, train_root, tmp_path):
    """data.pipeline=streaming with 2 workers (half a CPU each: the decode tasks take the other CPU), from disk
    records (data.stream_source=disk): each epoch every rank trains on its 4 full batches of 4, and a --resume
    after epoch 1 finishes epoch 2 on the records the first attempt wrote (reused, not written again). The
    workers compute on train.torch_threads threads whatever they reserve."""
    cfg = tiny_config(train_root, tmp_path, "data.pipeline=streaming", "data.stream_source=disk", "train.num_workers=2",
                      "train.cpus_per_worker=0.5", "data.batch_size=4", "train.epochs=2", "train.max_failures=0",
                      "train.checkpoint_every=1", "train.torch_threads=3")
    with pytest.raises(Exception):
        fit(cfg, str(tmp_path), evaluate_test=False, train_fn=stop_after_first_report)
    folders = sorted((tmp_path / "decoded").iterdir())
    assert [folder.name.split("-")[0] for folder in folders] == ["train", "val"]
    written = {folder.name: (folder / "images.npy").stat().st_mtime_ns for folder in folders}
    outcome = fit(cfg, str(tmp_path), resume=True, evaluate_test=False)
    history = outcome.history
    assert list(history.epoch) == [1, 2] and list(history.resumes) == [0, 1]
    assert list(history.train_images) == [32] * 2, "32 training rows: 2 ranks x 4 batches x 4 every epoch"
    assert list(history.val_images) == [16] * 2
    assert list(history.torch_threads) == [3, 3], "train.torch_threads, not the half CPU each worker reserves"
    assert {folder.name: (folder / "images.npy").stat().st_mtime_ns
            for folder in (tmp_path / "decoded").iterdir()} == written, "the resume reused the records"
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["pipeline"] == "streaming" and summary["pipeline_reason"].startswith("streaming: set by data.pipeline")
    assert summary["stream_source"] == "disk" and sorted(summary["stream_records"]) == ["train", "val"]


def test_ctrl_c_during_training_exits_130_naming_resume(train_root, tmp_path):
    """A user's Ctrl-C once epochs run (Ray Train v2 handles SIGINT itself): exit 130 and one sentence with
    --resume, as tune.py. A real process: the signal must reach the driver's main thread. Its setup line names
    the local dashboard."""
    import signal
    import subprocess

    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "pipelines/train.py", "--config", "configs/demo.yaml", "--output-dir", str(out), "--num-cpus", "2",
         f"data.root_dir={train_root}", "data.image_size=32", "data.batch_size=8", "model.backbone=test_efficientnet",
         "model.weights=none", "train.epochs=200", "train.channels_last=false", "data.augment=none"],
        cwd=Path(__file__).resolve().parents[1], env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("[cars_ray] epoch "):  # training has started: the first epoch's summary line
                proc.send_signal(signal.SIGINT)
                break
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert any(line.startswith("[cars_ray] epoch ") for line in lines), "\n".join(lines)
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: training was stopped before its end; its checkpoints are in {out}/ray_results/demo: "
        f"continue it with --resume --output-dir {out}")
    assert "Traceback" not in stderr
    setup = next(line for line in lines if "classes; train" in line)  # the setup line names the dashboard
    assert "; Ray dashboard http://127.0.0.1:" in setup, setup
