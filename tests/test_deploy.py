"""The Kubernetes path: KubeRay manifests and the Dockerfile agree with the project they deploy."""

from __future__ import annotations

import re
import shlex
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
import yaml
from packaging.requirements import Requirement

from cars_ray.config import load_config
from helpers.data import REPO

KUBERAY = REPO / "deploy" / "kuberay"
MOUNT = "/mnt/shared"


def manifests() -> dict[str, dict]:
    """kind -> the manifest of that kind (each file holds one object)."""
    docs = [yaml.safe_load(path.read_text()) for path in sorted(KUBERAY.glob("*.yaml"))]
    return {doc["kind"]: doc for doc in docs}


def cluster_specs() -> dict[str, dict]:
    found = manifests()
    return {"RayCluster": found["RayCluster"]["spec"], "RayJob": found["RayJob"]["spec"]["rayClusterSpec"],
            "RayService": found["RayService"]["spec"]["rayClusterConfig"]}


def pod_specs(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]


def ray_requirement() -> Requirement:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return next(r for r in map(Requirement, project["dependencies"]) if r.name == "ray")


def dockerfile_ray_version() -> str:
    return re.search(r"^ARG RAY_VERSION=(\S+)$", (REPO / "Dockerfile").read_text(), re.M).group(1)


def test_the_three_kinds_are_there():
    assert {"RayCluster", "RayJob", "RayService", "PersistentVolumeClaim"} <= set(manifests())


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob", "RayService"])
def test_cluster_spec_matches_the_project(kind):
    spec = cluster_specs()[kind]
    assert spec["rayVersion"] in ray_requirement().specifier, f"{kind} rayVersion outside pyproject.toml's ray pin"
    assert spec["rayVersion"] == dockerfile_ray_version(), f"{kind} rayVersion differs from the Dockerfile's base image"
    assert spec["authOptions"]["mode"] == "token", "the dashboard's token authentication stays on"
    claim = manifests()["PersistentVolumeClaim"]["metadata"]["name"]
    images = set()
    for pod in pod_specs(spec):
        for container in pod["containers"]:
            images.add(container["image"])
            assert container["workingDir"] == "/home/ray/cars_ray"
            assert any(m["mountPath"] == MOUNT for m in container["volumeMounts"]), f"{kind}: shared storage not mounted"
        assert {"name": "shared", "persistentVolumeClaim": {"claimName": claim}} in pod["volumes"]
    assert len(images) == 1 and re.fullmatch(r"ghcr\.io/cars-ray/cars-ray:[\w.-]+", images.pop())


def test_rayjob_runs_the_strong_recipe_with_real_paths_and_keys():
    words = shlex.split(manifests()["RayJob"]["spec"]["entrypoint"])
    assert words[:2] == ["python", "pipelines/train.py"] and (REPO / words[1]).is_file()
    config = words[words.index("--config") + 1]
    assert config == "configs/strong.yaml" and (REPO / config).is_file()
    overrides = [w for w in words if "=" in w and not w.startswith("-")]
    cfg = load_config(REPO / config, overrides)  # an unknown key or bad value fails here
    for path in (cfg.data.root_dir, cfg.data.split_file, cfg.train.storage_path, words[words.index("--output-dir") + 1]):
        assert str(path).startswith(MOUNT + "/"), f"{path} is not on the shared volume"


def test_rayservice_serves_the_serve_config_application():
    served = yaml.safe_load(manifests()["RayService"]["spec"]["serveConfigV2"])
    local = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    assert served["applications"] == local["applications"]
    module, _, attr = served["applications"][0]["import_path"].partition(":")
    assert (REPO / (module.replace(".", "/") + ".py")).is_file() and module == "serve.app" and attr == "build"
    assert served["applications"][0]["args"]["checkpoint"].startswith(MOUNT + "/")


def test_dockerfile_installs_the_project_on_the_pinned_ray():
    text = (REPO / "Dockerfile").read_text()
    assert dockerfile_ray_version() in ray_requirement().specifier
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py3\d+-(gpu|cu\d+)$", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cu\d+$", text, re.M)
    assert "pip install -e ." in text
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which the repository lacks"


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_a_cpu_only_worker_group_feeds_the_streaming_path(kind):
    """README "Data at scale": CPU-only nodes take the streaming path's decode tasks."""
    groups = {g["groupName"]: g for g in cluster_specs()[kind]["workerGroupSpecs"]}
    requests = groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert "nvidia.com/gpu" not in requests and int(requests["cpu"]) >= 8
    assert "nvidia.com/gpu" in groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["requests"]


@pytest.mark.parametrize("has_gpu, gpus", [(False, 0), (True, 0.25)])
def test_serve_config_asks_for_a_gpu_share_only_where_the_cluster_has_gpus(has_gpu, gpus):
    """`serve deploy serve/config.yaml` on a CPU-only local head must not wait forever for a GPU: the replica's
    resources come from serve.app:build (as on `serve run`), not fixed in the config, and the smallest app
    fits a 2-CPU head."""
    from serve.app import ServeArgs, replica_resources

    app = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())["applications"][0]
    deployments = {d["name"]: d for d in app["deployments"]}
    assert "ray_actor_options" not in deployments["Classifier"], "fixed replica resources override the builder's"
    resolved = replica_resources(ServeArgs.model_validate(app["args"]), has_gpu=has_gpu)
    assert resolved == {"num_cpus": 1.0, "num_gpus": gpus}
    smallest = resolved["num_cpus"] * deployments["Classifier"]["autoscaling_config"]["min_replicas"] + \
        deployments["CarsAPI"]["ray_actor_options"]["num_cpus"]
    assert smallest <= 2
