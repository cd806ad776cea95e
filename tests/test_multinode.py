"""Several Ray nodes on this machine: training that loses a node and then its driver, with checkpoints
in an S3-compatible store; paths other nodes cannot see; outputs written by the driver; a search
across nodes, its storage a ``file://`` URI, resumed after the head restarts; Serve losing a node.

One cluster for the module (``helpers.multinode.LocalCluster``): a head without CPUs and worker nodes
of one CPU each, so all work runs on worker nodes; the tests run in file order (the last one kills a
node of the cluster that the search test restarted). ``shared/`` is seen by every node; ``head_only/``
is hidden from the node that ``add_blind`` starts in its own mount namespace (skipped where mount
namespaces are not allowed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from ray.util.state import list_actors

from helpers.data import REPO, free_port, write_class_folders, write_tiny_checkpoint
from helpers.multinode import LocalCluster, call_on_cluster, start_pipeline, unshare_works

pytestmark = pytest.mark.slow

# No test rows: the evaluation of best/ is covered elsewhere and would add seconds to every run here.
TINY = ["data.image_size=32", "data.batch_size=8", "data.augment=none", "data.val_fraction=0.2",
        "data.test_fraction=0", "model.backbone=test_efficientnet", "model.weights=none",
        "optim.schedule=none", "train.channels_last=false", "train.early_stop_patience=0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("multinode")
    shared, head_only = base / "shared", base / "head_only"
    head_only.mkdir()
    return {"base": base, "shared": shared, "head_only": head_only,
            "data": write_class_folders(shared / "data", 24, (40, 32))}


@pytest.fixture(scope="module")
def cluster(world):
    cluster = LocalCluster(world["base"], {"node_a": 1, "node_b": 1})
    yield cluster
    cluster.shutdown()


def worker_nodes(cluster: LocalCluster, class_name: str = "RayTrainWorker") -> set[str]:
    """Node ids of the live actors of a class (the dashboard's state API)."""
    actors = list_actors(address=cluster.dashboard, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
                         raise_on_missing_output=False)
    return {actor.node_id for actor in actors}


def train_args(world: dict, out: Path, storage: str, epochs: int) -> list[str]:
    """train.py on the generated data: two workers of one CPU (one per worker node), a full checkpoint each epoch."""
    return ["--config", "configs/demo.yaml", "--output-dir", str(out), f"data.root_dir={world['data']}", *TINY,
            "train.checkpoint_every=1", "train.num_workers=2", "train.cpus_per_worker=1", "train.max_failures=2",
            f"train.storage_path={storage}", f"train.epochs={epochs}"]


@pytest.fixture(scope="module")
def s3_store():
    """An S3-compatible store on loopback (moto's server, one checkpoint folder admitted: ``helpers.s3``); the
    URI carries endpoint and keys for every node."""
    pytest.importorskip("moto.server", reason="moto[server] (the test extra) is not installed")
    boto3 = pytest.importorskip("boto3")
    from helpers.s3 import GatedS3Store

    port = free_port()
    store = GatedS3Store(port, tickets=1)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket="cars-ray")
    yield {"client": client, "gate": store.gate,
           "uri": f"s3://testing:testing@cars-ray/ray_results?scheme=http&endpoint_override=127.0.0.1:{port}&region=us-east-1"}
    store.stop()


def committed_full_checkpoints(store: dict, run: str = "demo") -> int:
    """Full checkpoints Ray Train has registered in its snapshot in the store (what a restart or --resume uses)."""
    try:
        body = store["client"].get_object(Bucket="cars-ray", Key=f"ray_results/{run}/checkpoint_manager_snapshot.json")
    except store["client"].exceptions.NoSuchKey:
        return 0
    snapshot = json.loads(body["Body"].read())
    return sum(r["metrics"].get("checkpoint_kind") == "full" for r in snapshot["checkpoint_results"])


def wait_for(condition, driver: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Poll ``condition`` (a file read, a request to the S3 store in this process) 4 times a second: the
    states it waits for last an epoch or more, and each poll takes CPU from the cluster's 2 cores."""
    deadline = time.time() + timeout
    while not condition() and driver.poll() is None and time.time() < deadline:
        time.sleep(0.25)
    assert condition(), log.read_text()[-3000:]


def test_training_loses_a_node_then_its_driver_and_finishes_from_an_s3_store(cluster, world, s3_store, tmp_path):
    """Two workers on two nodes, checkpoints in an S3-compatible store. node_b dies after the first full
    checkpoint: FailureConfig restarts the run on node_a and the replacement node_c from that checkpoint.
    Then the driver dies after the restarted run's first checkpoint: a fresh driver's --resume finishes the
    full epoch count from the store. The store holds every further checkpoint until the test admits it, so
    the deaths fall between the same checkpoints however fast the epochs run."""
    gate = s3_store["gate"]
    out, log = world["shared"] / "s3_run", tmp_path / "train.log"
    args = train_args(world, out, s3_store["uri"], 8)
    driver = start_pipeline(cluster, "train.py", *args, log=log)
    wait_for(lambda: committed_full_checkpoints(s3_store) == 1 and gate.held(), driver, log)
    placed, nodes = worker_nodes(cluster), {cluster.nodes[name].node_id for name in ("node_a", "node_b")}
    gate.admit(1)  # the restarted run's first checkpoint; the held one belongs to the group about to die
    cluster.kill("node_b")  # the node: its raylet, the worker on it, its object store
    cluster.add("node_c")   # the replacement the autoscaler would bring
    assert placed == nodes, "one training worker on each worker node"

    wait_for(lambda: "resumed from the checkpoint of epoch 1;" in log.read_text(), driver, log)
    assert worker_nodes(cluster) == {cluster.nodes[name].node_id for name in ("node_a", "node_c")}
    wait_for(lambda: committed_full_checkpoints(s3_store) == 2, driver, log)  # epoch 2, after the restart
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    assert not (out / "metrics.csv").exists(), "the first driver did not finish"

    gate.open()
    code, output = call_on_cluster(cluster, "train.py", *args, "--resume", log=tmp_path / "resume.log")
    assert code == 0, output[-4000:]
    history = pd.read_csv(out / "metrics.csv")
    assert list(history.epoch) == list(range(1, 9)), "the full epoch count"
    assert history.resumes.iloc[-1] == 2, "restarted once by FailureConfig, once by --resume"
    assert "resumed from the checkpoint of epoch 2;" in output
    assert (out / "best" / "model.pt").exists()


@pytest.fixture(scope="module")
def blind_node(cluster, world):
    """A third node that cannot see ``head_only/`` (it sees ``shared/``)."""
    if not unshare_works():
        pytest.skip("mount namespaces are not allowed here (unshare --mount): no node can be made blind to a folder")
    cluster.add_blind("node_blind", world["head_only"])
    return "node_blind"


def test_local_storage_other_nodes_cannot_see_fails_at_the_start(cluster, world, blind_node, tmp_path):
    storage = world["head_only"] / "ray_results"
    code, output = call_on_cluster(cluster, "train.py", "--config", "configs/demo.yaml", "--output-dir",
                                   str(world["shared"] / "blind_run"), f"data.root_dir={world['data']}", *TINY,
                                   f"train.storage_path={storage}", log=tmp_path / "train.log")
    assert code == 2, output[-4000:]
    last = output.strip().splitlines()[-1]
    assert f"train.storage_path {storage} is a local path that 1 of the" in last
    assert "cannot see" in last and "s3://" in last
    assert not list(storage.glob("demo/checkpoint_*")), "it stopped before training"


def test_crop_and_predict_outputs_land_where_the_driver_says(cluster, world, blind_node, tmp_path):
    crops = world["head_only"] / "crops"  # a folder only the driver's node has
    code, output = call_on_cluster(cluster, "crop.py", "--root-dir", str(world["data"]), "--output-dir", str(crops),
                                   log=tmp_path / "crop.log")
    assert code == 0, output[-4000:]
    report = json.loads((crops / "crop_report.json").read_text())
    assert report["written"] == len(list(world["data"].rglob("*.jpg"))) == len(list(crops.rglob("*.jpg")))
    assert "written" in output
    checkpoint = write_tiny_checkpoint(world["shared"] / "tiny_ckpt")
    predictions = world["head_only"] / "preds.csv"
    code, output = call_on_cluster(cluster, "predict.py", "--checkpoint", str(checkpoint), "--input",
                                   str(world["data"]), "--output", str(predictions), log=tmp_path / "predict.log")
    assert code == 0, output[-4000:]
    assert len(pd.read_csv(predictions)) == report["written"]


def test_streaming_decodes_on_a_node_that_holds_no_training_worker(cluster, world, tmp_path):
    """data.pipeline=streaming with one training worker of one CPU: its node has no CPU left, so the Ray Data
    tasks that decode its stream (``MapBatches(stream_batch)``) run on another node, as on CPU-only nodes."""
    from ray.util.state import list_actors, list_tasks

    def trainer_actors() -> dict[str, str]:
        return {a.actor_id: a.node_id for a in list_actors(address=cluster.dashboard, limit=10_000,
                filters=[("class_name", "=", "RayTrainWorker")], raise_on_missing_output=False)}

    before = trainer_actors()
    code, output = call_on_cluster(cluster, "train.py", "--config", "configs/demo.yaml", "--output-dir",
                                   str(world["shared"] / "stream_run"), f"data.root_dir={world['data']}", *TINY,
                                   "data.pipeline=streaming", "train.epochs=1", "train.num_workers=1",
                                   "train.cpus_per_worker=1", f"train.storage_path={world['shared'] / 'stream_storage'}",
                                   log=tmp_path / "stream.log")
    assert code == 0, output[-4000:]
    assert "data path streaming: set by data.pipeline" in output
    train_nodes = {node for actor, node in trainer_actors().items() if actor not in before}
    assert len(train_nodes) == 1
    decode_nodes, deadline = set(), time.time() + 60
    while not decode_nodes - train_nodes and time.time() < deadline:  # task events reach the GCS in batches
        decode_nodes = {t.node_id for t in list_tasks(address=cluster.dashboard, limit=10_000,
                                                      raise_on_missing_output=False) if "stream_batch" in t.name}
        time.sleep(2)
    assert decode_nodes and decode_nodes.isdisjoint(train_nodes), (decode_nodes, train_nodes)


def test_search_spreads_over_nodes_and_resumes_after_the_head_restarts(cluster, world, tmp_path):
    """Two trials at once, one per worker node, their state and checkpoints on shared storage given as a
    file:// URI; the head dies with the driver, the cluster comes back, --resume finishes both trials."""
    search, storage = world["shared"] / "search", world["shared"] / "search_storage"
    args = ["--config", "configs/tune_demo.yaml", "--output-dir", str(search), f"data.root_dir={world['data']}", *TINY,
            "train.epochs=1", "tune.scheduler=fifo", "tune.max_concurrent_trials=2", "tune.num_samples=1",
            "tune.search_space={optim.lr: {grid: [0.01, 0.003]}}", "tune.metric=val_loss", "tune.mode=min",
            f"train.storage_path={storage.as_uri()}"]
    driver = start_pipeline(cluster, "tune.py", *args, log=tmp_path / "search.log")
    nodes, deadline = set(), time.time() + 300
    while len(nodes) < 2 and time.time() < deadline:
        assert driver.poll() is None, (tmp_path / "search.log").read_text()[-3000:]
        nodes |= worker_nodes(cluster)
        time.sleep(1)  # a state-API query costs the dashboard CPU; a trial's workers live for tens of seconds
    assert len(nodes) == 2, "the two trials ran at once, one on each worker node"
    # The head goes down with the driver on it (as under `ray job submit`); the shared storage stays.
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    assert not (search / "tune_results.csv").exists()
    cluster.restart({"node_a": 1, "node_b": 1})
    code, output = call_on_cluster(cluster, "tune.py", *args, "--resume", log=tmp_path / "resume.log")
    assert code == 0, output[-4000:]
    table = pd.read_csv(search / "tune_results.csv")
    assert len(table) == 2 and (table.epochs_run == 1).all(), table.to_string()
    assert (search / "best" / "model.pt").exists()
    assert (storage / "tune").is_dir() and len(list((storage / "trials").iterdir())) == 2


def test_serve_replicas_on_two_nodes_survive_losing_one(cluster, tmp_path, monkeypatch):
    """benchmarks/node_loss.py serve, shrunk (a tiny model), on the module's cluster as the search test left
    it (node_a and node_b, one CPU each): two replicas of 0.75 CPU, one on each node, the ingress beside one,
    8 clients; the node of the other replica is killed and node_c added. Last in the module: it kills a node."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from node_loss import serve_losing_a_node

    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt")
    outcome = serve_losing_a_node(cluster, str(checkpoint), clients=8, load_seconds=12, replica_cpus=0.75, node_cpus=1)
    assert outcome["replicas_on_nodes"] == 2 and outcome["ok_before_kill"] > 0, outcome
    assert outcome["recovered_s"] is not None, outcome
    assert outcome["failed_until_recovered"] <= 8, "at most the requests in flight on the lost replica"
    assert outcome["ok_after_recovery"] > 0 and outcome["failed_after_recovery"] == 0, outcome
