"""Load on the served classifier over loopback, as a fraction of the model's own ceiling measured in the same run.

    python benchmarks/serve_load.py [--checkpoint DIR|model.onnx] [--duration 60] [--clients 32]
                                    [--batching on|off|both] [--backends auto torch onnx onnx-int8]
                                    [--num-cpus 1.75] [--max-batch-size 16] [--max-replicas 1]
                                    [--serve-env default|throughput|haproxy] [--deployments two|one]
                                    [--cold-requests 200]
                                    [--out results.json]

Without --checkpoint a checkpoint of the default model (offline Lite2, 224 px, fresh 196-class head;
latency does not depend on training) is built. For each backend (onnx-int8: the checkpoint quantised by
``pipelines/export.py --int8``, calibrated on the demo sample: fine for speed, not for accuracy) and
batching setting, the app is deployed on a local Ray instance, then:

- cold: the first --cold-requests requests right after the deployment, at the first client count;
- warm: after a 10 s warm-up, each client count for --duration seconds (each client sends the JPEG of
  ``_common.sample_jpeg`` and waits for the answer).

``model_ceiling.measure_ceiling`` (decode + preprocess + model, and the model alone, in a bare loop on the
threads of a replica of --ceiling-cpus CPUs) runs before and after the loads, in this process, while the app
is deployed but idle; each load's ``of_ceiling`` is its requests/s over the mean of the two decode + model
figures of its backend. Each load also counts the CPU time of every process of the Ray instance (proxy,
ingress, replicas, controller, Ray's own), per answered request: ``cpu_of_ceiling`` is the bare loop's CPU
per image over it, the share of the serving CPU that goes to decode + model. On an otherwise idle machine the
two ratios agree; on a shared one the wall-clock ratio is meaningless (a single loop and several Serve
processes get different shares of the cores) and the CPU ratio is the one to read. The load average is
recorded with every figure.
--serve-env sets Ray Serve's own switches in the environment of the Ray instance it starts:
``throughput`` is RAY_SERVE_THROUGHPUT_OPTIMIZED=1, ``haproxy`` adds RAY_SERVE_ENABLE_HA_PROXY=1 (which binds
the ingress replicas' ports on every interface). Serve's replica count is sampled once a second throughout,
and for --cooldown seconds after the load. Prints a JSON document, then a table of backend x clients.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time

from _common import sample_jpeg, write_checkpoint_for
from model_ceiling import int8_model, measure_ceiling

from serve.loadtest import load_with_replica_kill, run_load, running_replicas

SERVE_ENVS = {"default": {}, "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
              "haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}}


def process_name(pid: int) -> str:
    """A Ray process by what it is: its title (``ray::ProxyActor``, ``ray::ServeReplica:cars:Classifier``) or its
    program's name (``raylet``, ``gcs_server``, ``dashboard.py``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return "?"
    first = words[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split()[0]
    program = next((w.decode(errors="replace") for w in words[1:2] if w.endswith(b".py")), first)
    return os.path.basename(program.split()[0])


def ray_cpu_by_process() -> dict[str, float]:
    """CPU seconds (user + system) used so far by every live process of the Ray instance this driver started
    (its descendants: GCS, raylet, Serve's controller, proxy and replicas, Ray's agents), by process name
    (:func:`process_name`; processes of one name summed), read from /proc. The load's clients are threads of
    this process: they are not counted here (``measured_load`` counts them apart)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    totals: dict[str, float] = {}
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        name = process_name(pid)
        totals[name] = totals.get(name, 0.0) + (int(stats[pid][11]) + int(stats[pid][12])) / tick  # utime, stime
        todo.extend(children.get(pid, []))
    return totals


def measured_load(url: str, payload: bytes, clients: int, duration: float, max_requests: int | None = None) -> dict:
    """``run_load`` with the Ray instance's CPU milliseconds per answered request, in all and by process (the
    ones above 0.5 ms), the clients' own (this process's CPU during the load) and the load average."""
    before, client_before = ray_cpu_by_process(), time.process_time()
    load = run_load(url, payload, clients, duration, max_requests)
    client = time.process_time() - client_before
    after = ray_cpu_by_process()
    answered = max(1, load["requests"])
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    cpu = sum(spent.values())
    by_process = {name: round(seconds * 1000 / answered, 2) for name, seconds in
                  sorted(spent.items(), key=lambda item: -item[1]) if seconds * 1000 / answered >= 0.5}
    return {**load, "ray_cpu_s": round(cpu, 1), "ray_cpu_ms_per_request": round(cpu * 1000 / answered, 2),
            "ray_cpu_ms_per_request_by_process": by_process,
            "client_cpu_ms_per_request": round(client * 1000 / answered, 2), "load_average": os.getloadavg()[0]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def replica_sampler(stop: threading.Event, samples: list, t0: float, deployment: str) -> None:
    while not stop.is_set():
        try:
            samples.append((round(time.perf_counter() - t0, 1), running_replicas("cars", deployment)))
        except Exception:  # the app may be between deployments
            pass
        stop.wait(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--clients", type=int, nargs="+", default=[32])
    parser.add_argument("--batching", default="on", choices=("both", "on", "off"))
    parser.add_argument("--max-replicas", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["auto"], choices=("auto", "torch", "onnx", "onnx-int8"))
    parser.add_argument("--num-cpus", default="1.75", help="CPUs per model replica (ONNX Runtime's threads: at least 1)")
    parser.add_argument("--max-batch-size", default="16")
    parser.add_argument("--batch-wait-timeout-s", default="0.01")
    parser.add_argument("--target-ongoing", default="2", help="autoscaling target_ongoing_requests")
    parser.add_argument("--access-log", default="true", choices=("true", "false"), help="Serve's line per request")
    parser.add_argument("--cooldown", type=float, default=0, help="seconds of replica sampling after the load "
                        "(75 shows the scale-down: Serve's 30 s look-back + the downscale delay)")
    parser.add_argument("--cold-requests", type=int, default=200, help="requests counted as the cold figure (0: none)")
    parser.add_argument("--ceiling-cpus", type=float, default=1.75, help="the ceiling's replica CPUs (its threads)")
    parser.add_argument("--ceiling-seconds", type=float, default=8.0)
    parser.add_argument("--serve-env", default="default", choices=tuple(SERVE_ENVS))
    parser.add_argument("--deployments", default="two", choices=("one", "two"),
                        help="serve.app's deployments: two (ingress + model replicas) or one (the ingress infers)")
    parser.add_argument("--kill-replica", action="store_true",
                        help="instead: two replicas, --clients[0] clients, one replica killed after 10 s (issue #12)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    # Serve reads its switches at import, in every process of the Ray instance started below
    os.environ.update(SERVE_ENVS[args.serve_env])

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
               "max_batch_size": args.max_batch_size, "batch_wait_timeout_s": args.batch_wait_timeout_s,
               "max_replicas": args.max_replicas, "access_log": args.access_log, "serve_env": SERVE_ENVS[args.serve_env],
               "deployments": args.deployments,
               "runs": []}
    settings = [(backend, batching) for backend in args.backends
                for batching in (["on", "off"] if args.batching == "both" else [args.batching])]
    models = {}
    for backend in args.backends:
        models[backend] = checkpoint
        if backend == "onnx-int8" and not is_onnx_file(checkpoint):
            models[backend] = int8_model(checkpoint, os.path.join(tmp, "model.int8.onnx"))
    for backend, batching in settings:
        model = models[backend]
        serve.run(build({"checkpoint": model, "backend": backend, "batching": str(batching == "on").lower(),
                         "num_cpus": args.num_cpus, "max_batch_size": args.max_batch_size,
                         "batch_wait_timeout_s": args.batch_wait_timeout_s,
                         "min_replicas": "1", "max_replicas": str(args.max_replicas),
                         "target_ongoing_requests": args.target_ongoing, "access_log": args.access_log,
                         "upscale_delay_s": "2", "downscale_delay_s": "10", "deployments": args.deployments}),
                  name="cars", route_prefix="/")
        # the backend the replica runs (auto: onnx on a CPU) decides which ceiling the loads are compared with
        label = requests_json(url.replace("/predict", "/health"))["backend"]
        cold = None
        if args.cold_requests:
            cold = measured_load(url, payload, args.clients[0], 600, args.cold_requests)
            print(json.dumps({"cold": cold}), flush=True)
        ceiling_before = measure_ceiling({label: model}, payload, args.ceiling_cpus, seconds=args.ceiling_seconds)
        print(json.dumps({"ceiling_before": ceiling_before}), flush=True)
        run_load(url, payload, args.clients[0], 10)  # warm-up
        samples: list = []
        stop = threading.Event()
        sampler = threading.Thread(target=replica_sampler, args=(stop, samples, time.perf_counter(),
                                                                   "CarsAPI" if args.deployments == "one" else "Classifier"))
        sampler.start()
        loads = []
        for clients in args.clients:
            load = measured_load(url, payload, clients, args.duration)
            load["batching"], load["backend"] = batching, label
            loads.append(load)
            print(json.dumps(load), flush=True)
        time.sleep(args.cooldown)
        stop.set()
        sampler.join()
        ceiling_after = measure_ceiling({label: model}, payload, args.ceiling_cpus, seconds=args.ceiling_seconds)
        print(json.dumps({"ceiling_after": ceiling_after}), flush=True)
        ceiling = (ceiling_before[label]["decode_model_images_per_s"] + ceiling_after[label]["decode_model_images_per_s"]) / 2
        ceiling_cpu = (ceiling_before[label]["decode_model_cpu_ms_per_image"]
                       + ceiling_after[label]["decode_model_cpu_ms_per_image"]) / 2
        for load in loads + ([cold] if cold else []):
            load["of_ceiling"] = round(load["throughput_rps"] / ceiling, 3)
            # the CPU the bare loop spends per image over what serving spent per request: on a machine the load
            # keeps busy this is the rate ratio, and unlike it, it hardly moves when other work shares the cores
            load["cpu_of_ceiling"] = round(ceiling_cpu / load["ray_cpu_ms_per_request"], 3)
        results["runs"].append({"backend": label, "batching": batching, "cold": cold, "loads": loads,
                                "ceiling_before": ceiling_before, "ceiling_after": ceiling_after,
                                "decode_model_ceiling_images_per_s": round(ceiling, 1),
                                "decode_model_ceiling_cpu_ms_per_image": round(ceiling_cpu, 2),
                                "replicas_over_time": samples,
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
    print(f"\n{'backend':10} {'batching':8} {'run':5} {'clients':>7} {'req/s':>8} {'ceiling':>8} {'ratio':>6} "
          f"{'p50 ms':>8} {'p95 ms':>8} {'errors':>6} {'load':>5} {'cpu ms/req':>10} {'ceiling cpu ms':>14} {'cpu ratio':>9}")
    for run in results["runs"]:
        for name, load in [("cold", run["cold"])] * bool(run["cold"]) + [("warm", load) for load in run["loads"]]:
            print(f"{run['backend']:10} {run['batching']:8} {name:5} {load['clients']:7d} {load['throughput_rps']:8.1f} "
                  f"{run['decode_model_ceiling_images_per_s']:8.1f} {load['of_ceiling']:6.2f} {load['p50_ms'] or 0:8.1f} "
                  f"{load['p95_ms'] or 0:8.1f} {load['errors']:6d} {load['load_average']:5.1f} {load['ray_cpu_ms_per_request']:10.1f} "
                  f"{run['decode_model_ceiling_cpu_ms_per_image']:14.1f} {load['cpu_of_ceiling']:9.2f}")


def requests_json(url: str) -> dict:
    import requests

    return requests.get(url, timeout=60).json()


if __name__ == "__main__":
    main()
