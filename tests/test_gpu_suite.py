"""The GPU suite's own code, run dry on CPU: every step on the demo sample with a tiny model."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.data import REPO

pytestmark = pytest.mark.slow


def test_gpu_suite_dry_run_writes_the_steps_json(ray_address, tmp_path):
    """One training step run dry: strong, the recipe with the most options (mixup/cutmix, RandAugment, EMA,
    gradient clipping, per-stage learning rates, flip TTA) through train.py and Ray Train. Every step's config
    loads below."""
    out = tmp_path / "suite"
    env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONUNBUFFERED": "1", "SITE": str(tmp_path / "site")}
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "run", str(out), "timm", "strong", "--dry-run"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "strong.json").read_text())
    assert result["dry_run"] and result["epochs"] == 1 and 0 <= result["test_top1"] <= 1
    assert (out / "strong" / "best" / "model.pt").exists()
    history = pd.read_csv(out / "strong" / "metrics.csv")
    assert np.isfinite(history[["train_loss", "val_loss"]].to_numpy()).all()
    assert json.loads((out / "strong" / "best" / "meta.json").read_text())["ema"] is True, "the EMA weights are kept"
    assert json.loads((out / "strong" / "evaluation" / "metrics.json").read_text())["tta"] is True
    assert "timm: skipped in the dry run" in proc.stdout


@pytest.mark.parametrize("step", ["plain", "strong", "notebook"])
def test_every_training_step_config_loads_and_its_dry_run_model_builds(step, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_suite import DRY_RUN

    from cars_ray.config import load_config
    from cars_ray.models import create_model

    for overrides in ([], DRY_RUN):
        cfg = load_config(REPO / "configs" / f"{step}.yaml", ["data.root_dir=demo", *overrides])
        assert cfg.train.epochs >= 1
    model = create_model(cfg.model, num_classes=10, pretrained=False)  # the dry run's tiny backbone, the step's head
    assert model(torch.zeros(2, 3, cfg.data.image_size, cfg.data.image_size)).shape == (2, 10)


def test_gpu_suite_refuses_unknown_steps(tmp_path):
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "run", str(tmp_path), "nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown step(s) nope" in proc.stderr
