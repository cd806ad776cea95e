"""A run interrupted at any moment leaves a folder that --resume continues and --overwrite replaces (#28.1).

crop.py runs as a real process that gets SIGINT (what Ctrl-C sends to the terminal's process group) at
three moments: as Ray is about to start, while Ray starts, and mid-crop (each crop's write slowed so the
moment is certain); the continuation then runs in this process on the session's Ray. train.py and
evaluate.py are interrupted in this process where Ray would start (KeyboardInterrupt is what SIGINT raises).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.data import REPO, ray_temp_dir, write_class_folders, write_tiny_checkpoint
from helpers.entry_points import call_pipeline
from cars_ray.errors import DataError
from cars_ray.outputs import OUTPUT_MARKER, check_earlier_folder, start_output

PER_CLASS = 6  # 4 classes: 24 images

# Runs pipelines/crop.py as `python pipelines/crop.py ARGS` would, after arranging the moment of the interruption.
CROP_DRIVER = """
import os, runpy, signal, sys, time
moment, script, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if moment == "before-ray":
    import cars_ray.runtime
    def interrupted(*_, **__):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)
    cars_ray.runtime.init_ray = interrupted
elif moment == "mid-crop":
    import cars_ray.data.crop
    save = cars_ray.data.crop.save_crop
    def slow_save(path, encoded, note=""):
        time.sleep(0.4)
        return save(path, encoded, note)
    cars_ray.data.crop.save_crop = slow_save
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("interrupt") / "folder", PER_CLASS)


def crops_in(output: Path) -> set[str]:
    return {str(p.relative_to(output)) for p in output.rglob("*.jpg")}


def interrupted_crop(dataset: Path, output: Path, moment: str, env: dict) -> tuple[int, str]:
    """Start crop.py in a process group of its own, SIGINT the group at ``moment``: (exit code, stderr)."""
    command = [sys.executable, "-c", CROP_DRIVER, moment, str(REPO / "pipelines" / "crop.py"),
               "--root-dir", str(dataset), "--output-dir", str(output), "--num-cpus", "1"]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    if not full_env.get("RAY_ADDRESS"):
        full_env.pop("RAY_ADDRESS", None)  # a Ray of its own, not the one ray.init noted for this process
    proc = subprocess.Popen(command, cwd=REPO, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # a test run started in the background inherits SIGINT ignored: give the crop Python's own
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if moment != "before-ray":  # that one interrupts itself
            sign = (output / "logs" / "native.log") if moment == "ray-starting" else None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if (sign and sign.exists()) or (sign is None and crops_in(output)):
                    break
                time.sleep(0.05)
            if moment == "ray-starting":
                time.sleep(1.0)  # Ray's start takes seconds: its processes are being spawned now
            os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stderr


@pytest.mark.parametrize("moment", ["before-ray", "ray-starting", "mid-crop"])
def test_crop_interrupted_at_any_moment_resumes_to_the_full_count(ray_local, ray_address, dataset, tmp_path, moment):
    output = tmp_path / "crops"
    # The moment "while Ray starts" needs a Ray start of its own; the others join the session's Ray.
    env = {"RAY_TMPDIR": str(ray_temp_dir())} if moment == "ray-starting" else {"RAY_ADDRESS": ray_address}
    if moment == "ray-starting":
        env["RAY_ADDRESS"] = ""
    code, stderr = interrupted_crop(dataset, output, moment, env)
    assert code == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted") and "Traceback" not in stderr, stderr[-3000:]
    assert json.loads((output / OUTPUT_MARKER).read_text())["pipeline"] == "crop.py"
    assert not list(output.rglob(".tmp-*")), "a half-written file was left behind"
    before = crops_in(output)
    assert len(before) < 4 * PER_CLASS
    if moment == "mid-crop":
        assert before, "the interruption came before the first crop"

    # A plain re-run names both ways on; --resume writes exactly the missing crops.
    code, _, stderr = call_pipeline("crop.py", "--root-dir", str(dataset), "--output-dir", str(output))
    assert code == 2 and "continue it with --resume or replace it with --overwrite" in stderr, stderr[-2000:]
    code, stdout, stderr = call_pipeline("crop.py", "--root-dir", str(dataset), "--output-dir", str(output), "--resume")
    assert code == 0, stderr[-2000:]
    report = json.loads((output / "crop_report.json").read_text())
    assert (report["num_images"], report["already_present"], report["written"], report["skipped"]) == \
        (4 * PER_CLASS, len(before), 4 * PER_CLASS - len(before), 0)
    assert len(crops_in(output)) == 4 * PER_CLASS
    assert len(pd.read_csv(output / "crops.csv")) == 4 * PER_CLASS  # what an uninterrupted run lists
    if moment == "ray-starting":  # --overwrite redoes a folder left at any moment
        shutil.rmtree(output / "Alpha Sedan 2010")
        (output / "crop_report.json").unlink()
        (output / "crops.csv").unlink()
        code, _, stderr = call_pipeline("crop.py", "--root-dir", str(dataset), "--output-dir", str(output), "--overwrite")
        assert code == 0, stderr[-2000:]
        assert json.loads((output / "crop_report.json").read_text())["written"] == 4 * PER_CLASS


def test_crop_resume_of_nothing_starts_afresh(ray_local, dataset, tmp_path):
    """Interrupted before anything was written (reading the dataset): --resume is a full crop."""
    code, _, stderr = call_pipeline("crop.py", "--root-dir", str(dataset), "--output-dir", str(tmp_path / "c"), "--resume")
    assert code == 0, stderr[-2000:]
    assert json.loads((tmp_path / "c" / "crop_report.json").read_text())["written"] == 4 * PER_CLASS


def test_output_marker_rules(tmp_path):
    start_output(str(tmp_path / "t"), "train.py")
    with pytest.raises(DataError, match=r"holds the output of train.py, not of crop.py; choose another folder"):
        check_earlier_folder(str(tmp_path / "t"), "crop.py", ("crops.csv",), True, False)
    assert check_earlier_folder(str(tmp_path / "t"), "train.py", ("config.yaml",), True, False)
    with pytest.raises(DataError, match=r"already holds an earlier output \(\.cars_ray_output\.json\)"):
        check_earlier_folder(str(tmp_path / "t"), "train.py", ("config.yaml",), False, False)
    with pytest.raises(DataError, match="holds no earlier output to continue"):  # only where --resume means "the rest"
        check_earlier_folder(str(tmp_path / "empty"), "train.py", ("config.yaml",), True, False)
    assert not check_earlier_folder(str(tmp_path / "empty"), "crop.py", ("crops.csv",), True, False, resume_fresh=True)


def interrupt_at_ray_start(monkeypatch):
    import cars_ray.runtime

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(cars_ray.runtime, "init_ray", interrupted)


def test_evaluate_interrupted_is_replaced_with_overwrite(ray_local, dataset, tmp_path, monkeypatch):
    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt")
    args = ["--checkpoint", str(checkpoint), "--root-dir", str(dataset), "--output-dir", str(tmp_path / "e")]
    with monkeypatch.context() as patch:
        interrupt_at_ray_start(patch)
        assert call_pipeline("evaluate.py", *args)[0] == 130
    code, _, stderr = call_pipeline("evaluate.py", *args)
    assert code == 2 and "replace it with --overwrite" in stderr
    code, _, stderr = call_pipeline("evaluate.py", *args, "--overwrite")
    assert code == 0, stderr[-2000:]
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["num_images"] == 4 * PER_CLASS


def test_train_interrupted_before_its_first_epoch_resumes_or_is_overwritten(ray_local, dataset, tmp_path, monkeypatch):
    """train.py --resume and --overwrite reach Ray Train with a run folder where nothing was saved yet (the
    training itself is test_train's: here Ray Train's entry is stood in for, after its storage is prepared)."""
    from cars_ray.train import runner

    args = ["--config", str(REPO / "configs" / "demo.yaml"), f"data.root_dir={dataset}", "model.backbone=test_efficientnet",
            "model.weights=none", "data.image_size=32", "train.epochs=1", "data.batch_size=4", "train.tracking=none",
            "--output-dir", str(tmp_path / "t")]
    with monkeypatch.context() as patch:
        interrupt_at_ray_start(patch)
        assert call_pipeline("train.py", *args)[0] == 130
    assert {p.name for p in (tmp_path / "t").iterdir()} == {OUTPUT_MARKER, "config.yaml"}
    code, _, stderr = call_pipeline("train.py", *args)
    assert code == 2 and "continue it with --resume or replace it with --overwrite" in stderr

    calls = []

    def fit_until_ray_train(cfg, output_dir, resume=False, data=None, progress=None, **kwargs):
        calls.append((resume, runner.prepare_run_dir(cfg, output_dir, resume)))
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "fit", fit_until_ray_train)
    for flag, resume in (("--resume", True), ("--overwrite", False)):
        code, _, stderr = call_pipeline("train.py", *args, flag)
        assert code == 130 and "Traceback" not in stderr, stderr[-2000:]
        assert calls[-1] == (resume, str(tmp_path / "t" / "ray_results"))
