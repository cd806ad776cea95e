"""A real local cluster: `ray start --head` on free loopback ports, `ray job submit`, `ray stop`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.data import REPO, free_port

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert "gpu_worker" in config["available_node_types"]


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    """A Ray head on loopback with every port chosen free; always stopped."""
    temp_dir = tmp_path_factory.mktemp("ray")
    token = temp_dir / "auth_token"  # a fresh machine has no ~/.ray/auth_token; the test brings its own
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    ports = ["--port", str(free_port()), "--dashboard-port", str(dashboard),
             "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
             "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
             "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]
    start = subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
                            "--num-cpus", "2", "--disable-usage-stats", *ports, "--temp-dir", str(temp_dir)],
                           env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield {"address": f"http://127.0.0.1:{dashboard}", "env": env}
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def submit(head: dict, *entrypoint: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir .` as a user would; waits for the job to end."""
    return subprocess.run(
        [RAY, "job", "submit", "--address", head["address"], "--working-dir", str(REPO),
         "--runtime-env-json", json.dumps({"excludes": [".git", "runs", "outputs", ".stage", "*.onnx"]}), "--", *entrypoint],
        env=head["env"], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_job_submit_crop_pipeline(head_node, folder_dataset, tmp_path):
    out = tmp_path / "crops"
    proc = submit(head_node, "python", "pipelines/crop.py", "--root-dir", str(folder_dataset), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout.lower()
    report = json.loads((out / "crop_report.json").read_text())
    assert report["written"] == 24 and report["skipped"] == 0
    assert len(list(out.rglob("*.jpg"))) == 24


def test_job_submit_demo_training(head_node, tmp_path):
    started = time.time()
    out = tmp_path / "demo"
    proc = submit(head_node, "python", "pipelines/train.py", "--config", "configs/demo.yaml", "--output-dir", str(out),
                  "train.epochs=1", "data.max_images_per_class=8", "data.image_size=32",
                  "model.backbone=test_efficientnet", "model.weights=none")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test top-1" in proc.stdout and (out / "best" / "model.pt").exists()
    assert time.time() - started < 600
