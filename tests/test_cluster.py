"""The cluster config against Ray's own validation. Jobs on a running cluster: the demo training submitted
with `ray job submit` (tests/test_run_view.py, the session's Ray, token auth on); crop and predict run by a
driver on a cluster of several nodes (tests/test_multinode.py); crop.py starting its own local Ray
(tests/test_crop.py)."""

from __future__ import annotations

import yaml

from helpers.data import REPO


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert "gpu_worker" in config["available_node_types"]
    assert "cpu_worker" in config["available_node_types"], "CPU-only nodes for the streaming path's decode tasks"
