"""The GPU suite's own code, run dry on CPU: every step on the demo sample with a tiny model."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from helpers.data import REPO

pytestmark = pytest.mark.slow


def test_gpu_suite_dry_run_writes_every_steps_json(ray_address, tmp_path):
    out = tmp_path / "suite"
    env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONUNBUFFERED": "1", "SITE": str(tmp_path / "site")}
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "run", str(out), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in ("plain", "strong", "notebook"):
        result = json.loads((out / f"{step}.json").read_text())
        assert result["dry_run"] and result["epochs"] == 1 and 0 <= result["test_top1"] <= 1, step
        assert (out / step / "best" / "model.pt").exists()
    assert "timm: skipped in the dry run" in proc.stdout


def test_gpu_suite_refuses_unknown_steps(tmp_path):
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "run", str(tmp_path), "nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown step(s) nope" in proc.stderr
