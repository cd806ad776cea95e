"""Load on the served classifier over loopback: latency, throughput, errors, replica counts.

    python benchmarks/serve_load.py [--checkpoint DIR|model.onnx] [--duration 60] [--clients 1 8 32]
                                    [--batching both|on|off] [--max-replicas 3] [--out results.json]

Without --checkpoint a checkpoint of the default backbone (offline Lite2, 224 px, fresh 196-class
head; latency does not depend on training) is built. For each batching setting, the app is
deployed on a local Ray instance, then each client count runs for --duration seconds (each
client sends one JPEG at a time and waits for the answer). Serve's replica count is sampled once
a second throughout, and for --cooldown seconds after the load to show the scale-down. Prints a JSON document.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import tempfile
import threading
import time

import numpy as np
import requests
from _common import write_checkpoint_for
from PIL import Image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_jpeg() -> bytes:
    from cars_ray.config import DEMO_ROOT
    from cars_ray.data.loading import resolve_root

    root = resolve_root(DEMO_ROOT)
    folder = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))[0]
    path = os.path.join(root, folder, sorted(os.listdir(os.path.join(root, folder)))[0])
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def run_load(url: str, payload: bytes, clients: int, duration: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def client():
        with requests.Session() as session:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    ok = session.post(url, data=payload, headers={"content-type": "image/jpeg"}, timeout=60).status_code == 200
                except requests.RequestException:
                    ok = False
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": errors[0], "seconds": round(wall, 1),
            "throughput_rps": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.median(ms)), 1) if len(ms) else None,
            "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None}


def replica_sampler(stop: threading.Event, samples: list, t0: float) -> None:
    from ray import serve

    while not stop.is_set():
        try:
            status = serve.status().applications["cars"].deployments["Classifier"]
            running = sum(n for state, n in status.replica_states.items() if str(state).endswith("RUNNING"))
            samples.append((round(time.perf_counter() - t0, 1), running))
        except Exception:  # the app may be between deployments
            pass
        stop.wait(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batching", default="both", choices=("both", "on", "off"))
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--cooldown", type=float, default=75)  # look-back window (30 s) + downscale delay
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import ray
    from ray import serve

    from serve.app import build

    tmp = tempfile.mkdtemp()
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = os.path.join(tmp, "ckpt")
        write_checkpoint_for("tf_efficientnet_lite2", "linear", 224, checkpoint)
    payload = sample_jpeg()
    ray.init(address="local", include_dashboard=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/predict"
    results = {"checkpoint": checkpoint, "cpus": os.cpu_count(), "duration_s": args.duration, "runs": []}
    for batching in (["on", "off"] if args.batching == "both" else [args.batching]):
        serve.run(build({"checkpoint": checkpoint, "batching": str(batching == "on").lower(), "num_cpus": "0.5",
                         "min_replicas": "1", "max_replicas": str(args.max_replicas), "target_ongoing_requests": "2",
                         "upscale_delay_s": "2", "downscale_delay_s": "10"}), name="cars", route_prefix="/")
        run_load(url, payload, 1, 5)  # warm-up
        samples: list = []
        stop = threading.Event()
        sampler = threading.Thread(target=replica_sampler, args=(stop, samples, time.perf_counter()))
        sampler.start()
        loads = []
        for clients in args.clients:
            load = run_load(url, payload, clients, args.duration)
            load["batching"] = batching
            loads.append(load)
            print(json.dumps(load), flush=True)
        time.sleep(args.cooldown)
        stop.set()
        sampler.join()
        results["runs"].append({"batching": batching, "loads": loads, "replicas_over_time": samples,
                                "max_replicas_seen": max((n for _, n in samples), default=0),
                                "replicas_at_end": samples[-1][1] if samples else None})
        serve.delete("cars")
    serve.shutdown()
    ray.shutdown()
    text = json.dumps(results)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
