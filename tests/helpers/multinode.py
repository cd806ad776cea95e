"""A Ray cluster of several nodes on this machine: a head and worker nodes, each its own raylet.

The head has no CPUs, so every task, Train worker, trial and replica runs on a worker node, as on a
cluster whose head only coordinates. Each worker node carries a custom resource named after it
(``node_a``: 1) and its own temp folder. Drivers are separate processes (``pipelines/*.py --address``),
so the node-loss tests kill nodes under a real driver, as on a cluster; a driver that only has to run
to its end runs in the test process (``call_on_cluster``). Shared by the ``slow``
multi-node tests and ``benchmarks/node_loss.py``.
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

from ray.cluster_utils import Cluster
from ray.util.state import list_nodes

from helpers.data import REPO, free_port, ray_temp_dir

RAY = str(Path(sys.executable).with_name("ray"))
# Quick node-death detection: the GCS declares a node dead after 3 missed 0.5 s health checks (default 3 s x 5).
SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_failure_threshold": 3, "health_check_timeout_ms": 1000}


class LocalCluster:
    """Head (0 CPUs, dashboard on loopback) plus named worker nodes; ``kill`` stops a node's raylet with SIGKILL."""

    def __init__(self, base: Path, workers: dict[str, float]):
        self.base = base
        self.ray_temp = ray_temp_dir()
        self.start(workers)

    def start(self, workers: dict[str, float]) -> None:
        """A new head (new ports, empty state) and the named worker nodes."""
        self.dashboard_port = free_port()
        self.cluster = Cluster(initialize_head=True, connect=False, head_node_args={
            "num_cpus": 0, "redis_port": free_port(), "include_dashboard": True,
            "dashboard_host": "127.0.0.1", "dashboard_port": self.dashboard_port,
            "dashboard_agent_listen_port": free_port(), "temp_dir": str(self.temp_dir("head")),
            "_system_config": SYSTEM_CONFIG})
        self.nodes = {}
        self.hidden: dict[str, subprocess.Popen] = {}
        for name, cpus in workers.items():
            self.add(name, cpus)

    def restart(self, workers: dict[str, float]) -> None:
        """The whole cluster goes down (head included: all of Ray's state is lost) and comes back."""
        self.stop()
        self.start(workers)

    def temp_dir(self, name: str) -> Path:
        path = self.ray_temp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def add(self, name: str, cpus: float = 1) -> str:
        """Start a worker node with ``cpus`` CPUs and the resource ``name``; returns its node id."""
        node = self.cluster.add_node(num_cpus=cpus, resources={name: 1},
                                     temp_dir=str(self.temp_dir(name)))
        self.nodes[name] = node
        return node.node_id

    def kill(self, name: str) -> None:
        """The node dies: its raylet and every process on it get SIGKILL (no draining)."""
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)

    def add_blind(self, name: str, hidden: Path, cpus: float = 1, timeout: float = 60) -> None:
        """A worker node that cannot see ``hidden``: `ray start` in its own mount namespace, with an
        empty tmpfs mounted over that folder (as a local folder of the head is absent on another machine)."""
        ports = [f"--{flag}={free_port()}" for flag in (
            "node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
            "metrics-export-port", "runtime-env-agent-port")]
        start = [RAY, "start", "--block", f"--address={self.address}",
                 f"--num-cpus={cpus:g}", f"--resources={json.dumps({name: 1})}", "--disable-usage-stats",
                 f"--temp-dir={self.temp_dir(name)}", *ports]
        script = f"mount -t tmpfs tmpfs '{hidden}' && exec " + " ".join(f"'{word}'" for word in start)
        before = len(self.alive_nodes())
        self.hidden[name] = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                             stdout=subprocess.DEVNULL, stderr=(self.base / f"{name}.log").open("w"),
                                             start_new_session=True, env=driver_env())
        deadline = time.time() + timeout
        while len(self.alive_nodes()) <= before:
            if self.hidden[name].poll() is not None or time.time() > deadline:
                raise RuntimeError(f"node {name} did not join: " + (self.base / f"{name}.log").read_text()[-2000:])
            time.sleep(0.5)

    def alive_nodes(self) -> list:
        """The live nodes, by the dashboard's state API (which brings the cluster's auth token when it needs one)."""
        return list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)

    def stop(self) -> None:
        for process in self.hidden.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        self.cluster.shutdown()

    def shutdown(self) -> None:
        self.stop()
        shutil.rmtree(self.ray_temp, ignore_errors=True)


def full_checkpoint_epochs(run_dir: Path) -> list[int]:
    """Epochs of the full (resumable) checkpoints that have reached a run's storage folder."""
    return sorted(json.loads((path.parent / "meta.json").read_text())["epoch"]
                  for path in run_dir.glob("checkpoint_*/train_state.pt") if (path.parent / "meta.json").exists())


def unshare_works() -> bool:
    """Mount namespaces (root, or a kernel that lets users have them): needed by ``add_blind``."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def driver_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return env


def start_pipeline(cluster: LocalCluster, script: str, *args: str, log: Path) -> subprocess.Popen:
    """``python pipelines/<script> --address <cluster> args`` as a separate driver process."""
    return subprocess.Popen([sys.executable, str(REPO / "pipelines" / script), "--address", cluster.address, *args],
                            cwd=REPO, env=driver_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def call_on_cluster(cluster: LocalCluster, script: str, *args: str, log: Path) -> tuple[int, str]:
    """(exit code, output) of ``pipelines/<script> --address <cluster> args`` run in this process, which
    joins the cluster as its driver for the call: no interpreter to start, the modules are imported already
    (a driver that must die under a test is a process of its own: ``start_pipeline``). The output is also
    written to ``log``."""
    import ray

    from helpers.entry_points import call_pipeline

    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        code, stdout, stderr = call_pipeline(script, "--address", cluster.address, *args)
    finally:
        ray.shutdown()
    log.write_text(stdout + stderr)
    return code, stdout + stderr
