"""Load on the served classifier over loopback: latency, throughput, errors, replica counts.

    python benchmarks/serve_load.py [--checkpoint DIR|model.onnx] [--duration 60] [--clients 1 8 32]
                                    [--batching both|on|off] [--backends torch onnx onnx-int8]
                                    [--num-cpus 1] [--max-batch-size 16] [--max-replicas 3] [--out results.json]

Without --checkpoint a checkpoint of the default backbone (offline Lite2, 224 px, fresh 196-class
head; latency does not depend on training) is built. For each backend (onnx-int8: the checkpoint
quantised by ``pipelines/export.py --int8``, calibrated on the demo sample: fine for speed, not for
accuracy) and batching setting, the app is deployed on a local Ray instance, then each client count
runs for --duration seconds (each client sends one JPEG at a time and waits for the answer).
Serve's replica count is sampled once a second throughout, and for --cooldown seconds after the
load to show the scale-down. Prints a JSON document, then a table of backend x clients.
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

from _common import write_checkpoint_for
from PIL import Image

from serve.loadtest import load_with_replica_kill, run_load, running_replicas


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


def replica_sampler(stop: threading.Event, samples: list, t0: float) -> None:
    while not stop.is_set():
        try:
            samples.append((round(time.perf_counter() - t0, 1), running_replicas("cars")))
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
    parser.add_argument("--backends", nargs="+", default=["auto"], choices=("auto", "torch", "onnx", "onnx-int8"))
    parser.add_argument("--num-cpus", default="0.5", help="CPUs per model replica (ONNX Runtime's threads: at least 1)")
    parser.add_argument("--max-batch-size", default="16")
    parser.add_argument("--target-ongoing", default="2", help="autoscaling target_ongoing_requests")
    parser.add_argument("--access-log", default="true", choices=("true", "false"), help="Serve's line per request")
    parser.add_argument("--cooldown", type=float, default=75)  # look-back window (30 s) + downscale delay
    parser.add_argument("--kill-replica", action="store_true",
                        help="instead: two replicas, --clients[0] clients, one replica killed after 10 s (issue #12)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import ray
    from ray import serve

    from cars_ray.inference.onnx import is_onnx_file
    from cars_ray.runtime import start_local_ray
    from serve.app import build

    tmp = tempfile.mkdtemp()
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = os.path.join(tmp, "ckpt")
        write_checkpoint_for("tf_efficientnet_lite2", "linear", 224, checkpoint)
    payload = sample_jpeg()
    # replicas' logs stay in Ray's files; --kill-replica finds replicas through the state API (the dashboard)
    start_local_ray(include_dashboard=args.kill_replica, dashboard_host="127.0.0.1", log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/predict"
    if args.kill_replica:
        serve.run(build({"checkpoint": checkpoint, "backend": args.backends[0], "num_cpus": args.num_cpus,
                         "min_replicas": "2", "max_replicas": "2"}), name="cars", route_prefix="/")
        run_load(url, payload, 1, 5)  # warm-up
        outcome = load_with_replica_kill(url, payload, "cars", args.clients[0], kill_after=10, after_recovery=10)
        serve.shutdown()
        ray.shutdown()
        print(json.dumps(outcome))
        return
    results = {"checkpoint": checkpoint, "cpus": os.cpu_count(), "duration_s": args.duration, "num_cpus": args.num_cpus,
               "max_batch_size": args.max_batch_size, "runs": []}
    settings = [(backend, batching) for backend in args.backends
                for batching in (["on", "off"] if args.batching == "both" else [args.batching])]
    for backend, batching in settings:
        model = checkpoint
        if backend == "onnx-int8" and not is_onnx_file(checkpoint):
            model = int8_model(checkpoint, os.path.join(tmp, "model.int8.onnx"))
        serve.run(build({"checkpoint": model, "backend": backend, "batching": str(batching == "on").lower(),
                         "num_cpus": args.num_cpus, "max_batch_size": args.max_batch_size,
                         "min_replicas": "1", "max_replicas": str(args.max_replicas),
                         "target_ongoing_requests": args.target_ongoing, "access_log": args.access_log,
                         "upscale_delay_s": "2", "downscale_delay_s": "10"}), name="cars", route_prefix="/")
        run_load(url, payload, 1, 5)  # warm-up
        samples: list = []
        stop = threading.Event()
        sampler = threading.Thread(target=replica_sampler, args=(stop, samples, time.perf_counter()))
        sampler.start()
        loads = []
        for clients in args.clients:
            load = run_load(url, payload, clients, args.duration)
            load["batching"], load["backend"] = batching, backend
            loads.append(load)
            print(json.dumps(load), flush=True)
        time.sleep(args.cooldown)
        stop.set()
        sampler.join()
        results["runs"].append({"backend": backend, "batching": batching, "loads": loads, "replicas_over_time": samples,
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
    print(f"\n{'backend':10} {'batching':8} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'errors':>6}")
    for run in results["runs"]:
        for load in run["loads"]:
            print(f"{run['backend']:10} {run['batching']:8} {load['clients']:7d} {load['throughput_rps']:8.1f} "
                  f"{load['p50_ms'] or 0:8.1f} {load['p95_ms'] or 0:8.1f} {load['errors']:6d}")


def int8_model(checkpoint: str, out: str) -> str:
    """The checkpoint quantised to int8 by the export pipeline (calibrated on the demo sample)."""
    import subprocess
    import sys

    from cars_ray.config import DEMO_ROOT
    from cars_ray.data.loading import resolve_root

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, os.path.join(repo, "pipelines", "export.py"), "--checkpoint", checkpoint, "--out", out,
                    "--int8", "--calibration-dir", resolve_root(DEMO_ROOT), "--max-drop", "100"], check=True)
    return out


if __name__ == "__main__":
    main()
