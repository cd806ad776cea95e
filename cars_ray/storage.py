"""Paths on a Ray cluster of several nodes: which ones every node must see, checked before any work starts.

A local folder of the machine the command runs on (the driver's node) does not exist on the other
nodes of a cluster unless it is a shared mount (NFS, EFS, a Kubernetes ReadWriteMany volume).
Ray Train's checkpoints, the best checkpoint that evaluation actors load and the images that Ray
Data tasks read must all be where the nodes doing that work can see them. Without this check such
a run fails after its first checkpoint, or on another node with a traceback; with it, it fails at
the start, in one sentence. URIs of object stores (``s3://``, ``gs://``, ...) are seen by every node
with credentials and are not probed. Nodes the autoscaler adds later are not probed either.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from urllib.parse import urlparse, urlunparse

import pyarrow.fs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cars_ray.errors import ConfigError

PROBE_TIMEOUT_S = 60.0
SIGNATURE_BYTES = 64 * 1024


def local_path(path: str) -> str | None:
    """The local file system path of ``path`` (a plain path or a ``file://`` URI), or None for other URIs."""
    if "://" not in path:
        return os.path.abspath(path)
    parsed = urlparse(path)
    return parsed.path if parsed.scheme == "file" else None


def storage_uri(path: str) -> str:
    """What Ray Train's ``storage_path`` gets: an absolute local path, or the URI as given."""
    return os.path.abspath(path) if "://" not in path else path


def storage_join(uri: str, *names: str) -> str:
    """``uri``/name/... for a local path or a URI; a URI's query (``?endpoint_override=...``) stays at the end."""
    if "://" not in uri:
        return os.path.join(os.path.abspath(uri), *names)
    parsed = urlparse(uri)
    return urlunparse(parsed._replace(path="/".join([parsed.path.rstrip("/"), *names])))


def storage_exists(uri: str) -> bool:
    """Whether a folder or file exists at a local path or a URI (pyarrow's file systems, as Ray Train uses)."""
    filesystem, path = pyarrow.fs.FileSystem.from_uri(storage_uri(uri))
    return filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def remove_storage(uri: str) -> None:
    """Delete a folder at a local path or a URI."""
    filesystem, path = pyarrow.fs.FileSystem.from_uri(storage_uri(uri))
    filesystem.delete_dir(path)


def file_signature(path: str) -> tuple[int, str] | None:
    """(size, digest of the first 64 KiB) of a file as this node sees it; None when it has none there.
    Not the modification time: a copy installed on each node (the demo sample) is the same file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(SIGNATURE_BYTES)
        return os.path.getsize(path), hashlib.sha256(head).hexdigest()
    except OSError:
        return None


_signature_on_node = ray.remote(num_cpus=0, max_retries=0)(file_signature)


def _live_nodes() -> list[str]:
    """Ids of the live nodes of the connected cluster (empty when Ray is not started)."""
    return [node["NodeID"] for node in ray.nodes() if node["Alive"]] if ray.is_initialized() else []


def _blind_nodes(path: str, nodes: list[str]) -> list[str]:
    """Ids of ``nodes``, other than this one, on which ``path`` is missing or is another file."""
    here = ray.get_runtime_context().get_node_id()
    others = [node for node in nodes if node != here]
    expected = file_signature(path)
    probes = [_signature_on_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(path)
              for node in others]
    try:
        seen = ray.get(probes, timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise ConfigError(f"could not check within {PROBE_TIMEOUT_S:.0f} s that every node of the Ray cluster sees "
                          f"{path}: a node did not answer") from None
    return [node for node, signature in zip(others, seen) if signature != expected]


def _refuse(blind: list[str], total: int, what: str, shown: str, advice: str) -> None:
    if blind:
        raise ConfigError(f"{what} {shown} is a local path that {len(blind)} of the {total} nodes of this Ray cluster "
                          f"cannot see (node {blind[0][:12]}...); {advice}")


def check_shared_output(path: str, what: str) -> None:
    """Fail now if a folder this run writes to (``what``: its flag or key) is not shared by all nodes.

    The folder is made, a marker file with a random name is written into it, looked for from a task
    pinned to each other node, and removed again.
    """
    folder, nodes = local_path(path), _live_nodes()
    if folder is None or len(nodes) < 2:
        return
    os.makedirs(folder, exist_ok=True)
    marker = os.path.join(folder, f".cars_ray-node-probe-{secrets.token_hex(6)}")
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write("written by cars_ray to check that every Ray node sees this folder; safe to delete\n")
    try:
        blind = _blind_nodes(marker, nodes)
    finally:
        os.remove(marker)
    _refuse(blind, len(nodes), what, path, "give a folder every node mounts (NFS, a shared volume) or an object store URI "
                               "such as s3://bucket/prefix")


def check_shared_input(path: str, what: str) -> None:
    """Fail now if an input file (a dataset image, a checkpoint file) is not the same file on every node.

    Read-only: each node compares the file's size and first bytes with this node's.
    """
    file, nodes = local_path(path), _live_nodes()
    if file is None or len(nodes) < 2:
        return
    _refuse(_blind_nodes(file, nodes), len(nodes), what, path, "put it on storage every node mounts")
