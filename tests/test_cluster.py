"""The cluster config against Ray's own validation, and `ray job submit` of the crop pipeline to a running
cluster (the session's Ray, token auth on). The demo training submitted as a job: tests/test_run_view.py (its
console is the job's log); crop and predict across several nodes: tests/test_multinode.py."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers.cluster import submit
from helpers.data import REPO

pytestmark = pytest.mark.slow


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert "gpu_worker" in config["available_node_types"]


def test_job_submit_crop_pipeline(job_cluster, folder_dataset, tmp_path):
    out = tmp_path / "crops"
    proc = submit(job_cluster, "python", "pipelines/crop.py", "--root-dir", str(folder_dataset), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout.lower()
    report = json.loads((out / "crop_report.json").read_text())
    assert report["written"] == 24 and report["skipped"] == 0
    assert len(list(out.rglob("*.jpg"))) == 24
