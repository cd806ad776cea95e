"""A node lost on a Ray cluster of several nodes (all on this machine): what training and serving lose.

    python benchmarks/node_loss.py train [--epochs 6] [--image-size 128] [--out train.json]
    python benchmarks/node_loss.py serve [--checkpoint DIR] [--clients 8] [--load-seconds 20] [--out serve.json]

Both start ``tests/helpers/multinode.LocalCluster``: a head without CPUs and two worker nodes
(``node_a``, ``node_b``), each its own raylet, and kill ``node_b`` (its raylet and every process on
it, SIGKILL) in the middle of the work, then add ``node_c`` as an autoscaler would.

- train: ``pipelines/train.py`` on the packaged demo sample (Lite0, offline weights), 2 workers of
  one CPU, a full checkpoint each epoch on shared storage; once without a failure, then with
  ``node_b`` killed half-way through epoch 3. Reports the epochs redone (the epoch in progress at the
  kill, minus the epoch of the checkpoint it resumed from) and the wall time lost against the run
  without a failure.
- serve: the classifier with two replicas (1.5 CPUs each on nodes of 2, so one per worker node),
  Serve's proxy on the head; 8 closed-loop clients; after 5 s the node holding a replica (not the ingress) is killed.
  Reports the failed requests, the seconds until two replicas run again and the answers after that.
  The load lasts about --load-seconds: 5 s before the kill, the recovery, and the rest after it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the multi-node cluster helper the tests use

from helpers.multinode import LocalCluster, full_checkpoint_epochs, start_pipeline  # noqa: E402


def train_once(cluster: LocalCluster, base: Path, name: str, args: argparse.Namespace,
               kill_in_epoch: int | None) -> dict:
    """One training run; with ``kill_in_epoch``, node_b dies half-way through that epoch."""
    storage, out = base / "shared" / f"{name}_results", base / "shared" / name
    driver = start_pipeline(cluster, "train.py", "--config", "configs/demo.yaml", "--output-dir", str(out),
                            f"data.image_size={args.image_size}", f"train.epochs={args.epochs}",
                            "train.checkpoint_every=1", "train.num_workers=2", "train.cpus_per_worker=1",
                            "train.max_failures=2", f"train.storage_path={storage}", log=base / f"{name}.log")
    killed = None
    if kill_in_epoch is not None:
        done = kill_in_epoch - 1
        while done not in full_checkpoint_epochs(storage / "demo"):
            if driver.poll() is not None:
                raise SystemExit(f"training ended before epoch {kill_in_epoch}: see {base / (name + '.log')}")
            time.sleep(0.1)
        seen = time.perf_counter()
        time.sleep(args.epoch_seconds / 2)
        in_progress = max(full_checkpoint_epochs(storage / "demo")) + 1
        cluster.kill("node_b")
        cluster.add("node_c")
        killed = {"kill_in_epoch": in_progress, "seconds_after_checkpoint": round(time.perf_counter() - seen, 1)}
    code = driver.wait(timeout=3600)
    log = (base / f"{name}.log").read_text()
    if code != 0:
        raise SystemExit(f"training exited {code}:\n{log[-3000:]}")
    run = json.loads((out / "run.json").read_text())
    resumed = [int(n) for n in re.findall(r"resumed from the checkpoint of epoch (\d+)", log)]
    result = {"wall_seconds": run["wall_seconds"], "epochs_run": run["epochs_run"], "test_top1": run["test_top1"],
              "resumed_from_epochs": resumed}
    if killed:
        result.update(killed, epochs_redone=killed["kill_in_epoch"] - resumed[0] if resumed else None)
    return result


def bench_train(args: argparse.Namespace) -> dict:
    base = Path(tempfile.mkdtemp(prefix="node_loss_"))
    cluster = LocalCluster(base, {"node_a": 1, "node_b": 1})
    try:
        clean = train_once(cluster, base, "clean", args, None)
        args.epoch_seconds = clean["wall_seconds"] / (2 * args.epochs)  # a rough upper bound of half an epoch
        cluster.restart({"node_a": 1, "node_b": 1})
        lost = train_once(cluster, base, "node_lost", args, kill_in_epoch=3)
    finally:
        cluster.shutdown()
    return {"clean": clean, "node_lost": lost,
            "wall_seconds_lost": round(lost["wall_seconds"] - clean["wall_seconds"], 1)}


def bench_serve(args: argparse.Namespace) -> dict:
    from _common import write_checkpoint_for

    base = Path(tempfile.mkdtemp(prefix="node_loss_"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = str(base / "ckpt")
        write_checkpoint_for("tf_efficientnet_lite0", "linear", 224, checkpoint)
    # 2 CPUs a node and 1.5 a model replica: one replica per node, and room for the ingress (0.25) beside one.
    cluster = LocalCluster(base, {"node_a": 2, "node_b": 2})
    try:
        return serve_losing_a_node(cluster, checkpoint, args.clients, args.load_seconds, replica_cpus=1.5, node_cpus=2)
    finally:
        cluster.shutdown()


def serve_losing_a_node(cluster: LocalCluster, checkpoint: str, clients: int, load_seconds: float,
                        replica_cpus: float, node_cpus: float) -> dict:
    """Two replicas of ``replica_cpus`` on a cluster whose worker nodes have ``node_cpus`` (sized so that one
    replica fits on each, and the ingress's 0.25 CPU beside one), Serve's proxy on the head, ``clients``
    closed-loop clients. After 5 s the node of a replica (not the ingress's) is killed and ``node_c`` added
    with as many CPUs. This process is the cluster's driver for the call (the test calls it on its
    module's cluster)."""
    import ray
    from ray import serve

    from helpers.data import free_port
    from serve_load import sample_jpeg

    from serve.app import build
    from serve.loadtest import load_with_failure, replica_actors, run_load, running_replicas

    ray.init(address=cluster.address, log_to_driver=False)
    try:
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(build({"checkpoint": checkpoint, "num_cpus": str(replica_cpus), "min_replicas": "2",
                         "max_replicas": "2", "access_log": "false"}), name="cars", route_prefix="/")
        url, payload = f"http://127.0.0.1:{port}/predict", sample_jpeg()
        run_load(url, payload, 1, 3)  # warm-up
        replica_nodes = {a.node_id for a in replica_actors("cars")}
        ingress = {a.node_id for a in replica_actors("cars", "CarsAPI")}
        victim = next(name for name, node in cluster.nodes.items() if node.node_id in replica_nodes - ingress)
        victim_id = cluster.nodes[victim].node_id

        def kill_node():
            cluster.kill(victim)
            cluster.add("node_c", node_cpus)
            return lambda: running_replicas("cars") == 2 and victim_id not in {
                a.node_id for a in replica_actors("cars")}

        outcome = load_with_failure(url, payload, clients, kill_after=5, fail=kill_node,
                                    after_recovery=max(1.0, load_seconds - 5 - 10))
        outcome.update(replicas_on_nodes=len(replica_nodes), killed_node=victim)
        serve.shutdown()
        return outcome
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("train", "serve"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--checkpoint", default=None, help="serve: the model (default: Lite0, 224 px, untrained head)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--load-seconds", type=float, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    started = time.perf_counter()
    result = bench_train(args) if args.what == "train" else bench_serve(args)
    result["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
