"""What a user sees: the demo submitted as a job with a quiet console, the run report in a browser, tracking and
the comparison of runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from helpers.cluster import job_logs, submit
from helpers.data import REPO
from helpers.entry_points import call_pipeline

pytestmark = pytest.mark.slow
TINY = ["model.backbone=test_efficientnet", "model.weights=none", "data.image_size=32", "data.batch_size=8",
        "data.augment=light", "train.channels_last=false", "train.epochs=2"]


@pytest.fixture(scope="module")
def demo_job(job_cluster, tmp_path_factory):
    """The main job as a user runs it on a cluster: the demo config (a tiny model to keep it short, MLflow
    tracking on for the test below) submitted with `ray job submit`. Returns the submission, the job's
    console (its log) and its output folder."""
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = submit(job_cluster, "python", "pipelines/train.py", "--config", "configs/demo.yaml", "--output-dir", str(out),
                  *TINY, "train.tracking=mlflow", submission_id="cars-ray-demo")
    console = job_logs(job_cluster, "cars-ray-demo") if proc.returncode == 0 else ""
    return proc, console, out


def test_demo_job_succeeds_and_its_console_fits_on_one_screen(demo_job):
    proc, console, out = demo_job
    assert proc.returncode == 0 and "succeeded" in proc.stdout.lower(), proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in console.splitlines() if line.strip()]
    assert len(lines) <= 30, "\n".join(lines)
    text = "\n".join(lines)
    assert "classes; train" in lines[0] and "worker(s) x" in lines[0], f"one setup line first:\n{text}"
    assert sum(line.startswith("[cars_ray] epoch ") and "val_top1" in line for line in lines) == 2, "one line per epoch"
    assert "test top-1" in text and "report.html" in text and (out / "best" / "model.pt").exists()
    for noise in ("RayTrainWorker", "INFO", "WARNING", "core_worker", "Running Dataset", "Checkpoint successfully"):
        assert noise not in text, noise
    log = (out / "logs" / "run.log").read_text()
    assert "[cars_ray] epoch 2/2" in log, "the full log keeps what the console showed"


def test_report_opens_in_headless_chromium_with_no_broken_image(demo_job, tmp_path):
    *_, out = demo_job
    node, chromium = shutil.which("node"), shutil.which("chromium")
    if not (node and chromium and (REPO / "tests" / "web" / "node_modules" / "playwright-core").is_dir()):
        pytest.skip("needs node, Debian chromium and tests/web/node_modules/playwright-core (installed by .ci/run)")
    shot = tmp_path / "report.png"
    proc = subprocess.run([node, "report_test.js", str(out / "report.html"), str(shot)], cwd=REPO / "tests" / "web",
                          capture_output=True, text=True, timeout=120, env={**os.environ, "CHROMIUM": chromium})
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not seen["requests"], "the report is self-contained"
    alts = {image["alt"] for image in seen["images"]}
    assert {"Training curves", "Worst classes", "Most confident mistakes", "Confusion matrix"} <= alts
    assert all(image["complete"] and image["width"] > 0 for image in seen["images"]), seen["images"]
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert f"{metrics['top1']:.3f}" in seen["headline"] and str(metrics["num_images"]) in seen["headline"]
    assert shot.stat().st_size > 10_000


def test_compare_lines_up_runs(demo_job, tmp_path):
    *_, out = demo_job
    second = tmp_path / "copy"
    shutil.copytree(out, second)
    summary = json.loads((second / "run.json").read_text())
    (second / "run.json").write_text(json.dumps({**summary, "test_top1": 1.0, "run_name": "other"}))
    code, stdout, stderr = call_pipeline("compare.py", str(out), str(second), "--out", str(tmp_path / "c.png"))
    assert code == 0, stderr
    table = stdout.splitlines()
    assert table[1].lstrip().startswith(str(second)), "best test top-1 first"
    assert (tmp_path / "c.png").stat().st_size > 5_000
    code, _, stderr = call_pipeline("compare.py", str(tmp_path / "nothing"), "--out", str(tmp_path / "d.png"))
    assert code == 2 and "holds no finished run" in stderr


def test_mlflow_tracking_through_rays_integration(demo_job):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    *_, out = demo_job
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = MlflowClient("file://" + str(out / "mlruns"))
    experiment = client.get_experiment_by_name("demo")
    run = client.search_runs([experiment.experiment_id])[0]
    history = client.get_metric_history(run.info.run_id, "val_top1")
    assert [m.step for m in history] == [1, 2]
    config = json.loads((out / "best" / "meta.json").read_text())["config"]
    assert run.data.params["optim.lr"] == str(config["optim"]["lr"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "curves.png" in artifacts
