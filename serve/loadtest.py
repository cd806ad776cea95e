"""Load on the served classifier over HTTP: closed-loop clients, and a replica killed under that load.

Used by ``benchmarks/serve_load.py`` (the recorded figures) and ``tests/test_serve.py`` (the same
code, shrunk). Each client sends one image at a time and waits for the answer.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

import numpy as np
import requests


def closed_loop(url: str, payload: bytes, clients: int, until: Callable[[], bool],
                on_answer: Callable[[bool, float], None]) -> None:
    """``clients`` threads posting ``payload`` to ``url`` until ``until()``; ``on_answer(ok, seconds)`` per request."""

    def client() -> None:
        with requests.Session() as session:
            while not until():
                start = time.perf_counter()
                try:
                    ok = session.post(url, data=payload, headers={"content-type": "image/jpeg"}, timeout=60).status_code == 200
                except requests.RequestException:
                    ok = False
                on_answer(ok, time.perf_counter() - start)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_load(url: str, payload: bytes, clients: int, duration: float, max_requests: int | None = None) -> dict:
    """Throughput, p50/p95 latency and errors of ``clients`` closed-loop clients for ``duration`` seconds, or
    until ``max_requests`` requests have been sent (answered or failed), whichever comes first."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration
    sent = [0]

    def record(ok: bool, seconds: float) -> None:
        with lock:
            if ok:
                latencies.append(seconds)
            else:
                errors[0] += 1

    def done() -> bool:
        if time.perf_counter() >= stop_at:
            return True
        if max_requests is None:
            return False
        with lock:
            sent[0] += 1
            return sent[0] > max_requests

    started = time.perf_counter()
    closed_loop(url, payload, clients, done, record)
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": errors[0], "seconds": round(wall, 1),
            "throughput_rps": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.median(ms)), 1) if len(ms) else None,
            "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None}


def replica_actors(app: str, deployment: str = "Classifier") -> list:
    """The live replica actors of one deployment of a Serve application."""
    import ray
    from ray.util.state import list_actors

    # this driver's own Ray instance by its GCS address: without one the state API refuses to choose when
    # several Ray instances run on the machine (start_local_ray pins RAY_ADDRESS in Ray's processes, not here)
    alive = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")], limit=1000)
    return [a for a in alive if a.class_name.endswith(f"{app}:{deployment}")]


def running_replicas(app: str, deployment: str = "Classifier") -> int:
    """How many replicas of a deployment of a Serve application (the model's: Classifier, or CarsAPI with
    deployments=one) are RUNNING, by Serve's own status."""
    from ray import serve

    return serve.status().applications[app].deployments[deployment].replica_states.get("RUNNING", 0)


def load_with_failure(url: str, payload: bytes, clients: int, kill_after: float, after_recovery: float,
                      fail: Callable[[], Callable[[], bool]], timeout: float = 120) -> dict:
    """Closed-loop load; after ``kill_after`` s ``fail()`` breaks something and returns a ``recovered()`` check.
    Counts answers before the failure, failures until ``recovered()`` holds, and answers for ``after_recovery``
    s after that; ``recovered_s`` is None if it never recovered within ``timeout``."""
    counts = {"ok_before_kill": 0, "failed_before_kill": 0, "ok_until_recovered": 0, "failed_until_recovered": 0,
              "ok_after_recovery": 0, "failed_after_recovery": 0}
    phase, lock, stop = ["before_kill"], threading.Lock(), threading.Event()

    def record(ok: bool, seconds: float) -> None:
        with lock:
            counts[f"{'ok' if ok else 'failed'}_{phase[0]}"] += 1

    load = threading.Thread(target=closed_loop, args=(url, payload, clients, stop.is_set, record), daemon=True)
    load.start()
    time.sleep(kill_after)
    phase[0] = "until_recovered"
    killed_at = time.perf_counter()
    recovered = fail()
    recovered_s = None
    while time.perf_counter() - killed_at < timeout:
        time.sleep(0.5)
        if recovered():
            recovered_s = round(time.perf_counter() - killed_at, 1)
            break
    phase[0] = "after_recovery"
    time.sleep(after_recovery)
    stop.set()
    load.join(timeout=120)
    return {**counts, "clients": clients, "recovered_s": recovered_s}


def load_with_replica_kill(url: str, payload: bytes, app: str, clients: int, kill_after: float,
                           after_recovery: float, timeout: float = 120) -> dict:
    """``load_with_failure`` where one Classifier replica's process gets SIGKILL; recovered when the killed
    replica is gone and as many replicas as before are RUNNING."""
    before = []

    def kill_one_replica() -> Callable[[], bool]:
        before.extend(replica_actors(app))
        victim = before[0]
        os.kill(victim.pid, signal.SIGKILL)

        def recovered() -> bool:
            alive = {a.actor_id for a in replica_actors(app)}
            return len(alive) == len(before) and victim.actor_id not in alive and running_replicas(app) == len(before)
        return recovered

    outcome = load_with_failure(url, payload, clients, kill_after, after_recovery, kill_one_replica, timeout)
    return {**outcome, "replicas": len(before)}
