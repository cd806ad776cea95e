"""Memory and speed of the two data paths as the data grows (issue #22): cached vs streaming.

    python benchmarks/data_scale.py [--sizes 10000 30000 100000] [--steps 200] [--image-size 128]
        [--out runs/data_scale] [--data-dir DIR] [--num-cpus N] [--object-store-mb MB]

For each size it generates a synthetic dataset once (``--width`` x ``--height`` JPEGs, ``--classes`` class
folders with names.csv, learnable by colour; under ``--data-dir``, default OUT/data; never commit it), then
runs ``pipelines/train.py`` on it once per mode (``data.pipeline=cached`` and ``streaming``): Lite0 (offline
weights) at ``--image-size`` px, one epoch capped at ``--steps`` training steps (``train.max_steps_per_epoch``),
validation and the test evaluation on the small val/test fractions, as a user would run it.

How it measures: this script starts the Ray instance itself (``ray.init(address="local")``: it owns it and
shuts it down; no ``ray stop``, which would end every Ray on the machine) and runs train.py as a driver that
joins it (RAY_ADDRESS). A thread samples every ``--interval`` seconds:

- resident memory (RSS, psutil) of each process: the driver (train.py), the training worker (a process whose
  title holds ``RayTrainWorker``), the raylet, the GCS, and the other Ray workers (decode tasks, Ray Data and
  Train actors); each run records every kind's peak (the largest single process of that kind);
- the object store: in Ray 2.60 plasma lives inside the raylet, so its memory is shared memory (/dev/shm)
  mapped by the raylet and the workers, counted in their RSS only for the pages each touched. The store's own
  figures come from the raylet's store stats (``get_memory_info_reply``: ``object_store_bytes_used``, peak
  over the samples, and ``spilled_bytes_total``, disk spilled during the run).

Training images/s and wall time come from the run's run.json (wall time also from this script's clock,
including the process start, Ray join and the decode). Writes OUT/result.json and prints a table of the runs
and one extrapolating both paths to 1M images at 224 and 384 px (labelled as extrapolation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from multiprocessing import Pool

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("cached", "streaming")
KINDS = ("driver", "training_worker", "raylet", "gcs", "other_ray_workers")


# ---------------------------------------------------------------- data

def write_image(job: tuple[str, int, int, int, int, int]) -> None:
    from PIL import Image

    path, class_index, classes, width, height, seed = job
    rng = np.random.default_rng(seed)
    hue = np.array([(class_index * 97) % 256, (class_index * 53 + 80) % 256, (class_index * 29 + 160) % 256])
    gradient = np.linspace(0, 1, width)[None, :, None] * rng.integers(40, 120, 3)
    pixels = (gradient + rng.integers(0, 40, (height, width, 3))).clip(0, 255).astype(np.uint8)
    top, left = rng.integers(0, height // 3), rng.integers(0, width // 3)
    pixels[top:top + height // 2, left:left + width // 2] = hue
    Image.fromarray(pixels).save(path, quality=85)


def generate(root: str, count: int, classes: int, width: int, height: int) -> str:
    """``count`` JPEGs in ``classes`` folders (+ names.csv); reused when a complete one is there already."""
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker) and open(marker).read().strip() == f"{count} {classes} {width} {height}":
        return root
    jobs = []
    for index in range(count):
        class_index = index % classes
        folder = os.path.join(root, f"class {class_index + 1:03d}")
        os.makedirs(folder, exist_ok=True)
        jobs.append((os.path.join(folder, f"{index:07d}.jpg"), class_index, classes, width, height, index))
    pool = Pool(os.cpu_count())
    pool.map(write_image, jobs, chunksize=256)
    pool.close()  # not the context manager's terminate(): its SIGTERM makes Ray's fault handler (forked
    pool.join()   # into the children with the driver) print a stack trace per child
    with open(os.path.join(root, "names.csv"), "w") as handle:
        handle.write("class_id,class_name\n" + "".join(f"{i},class {i:03d}\n" for i in range(1, classes + 1)))
    with open(marker, "w") as handle:
        handle.write(f"{count} {classes} {width} {height}")
    return root


# ---------------------------------------------------------------- sampling

def kind_of(process, driver_pid: int, raylet_pid: int, gcs_pid: int) -> str | None:
    if process.pid == driver_pid:
        return "driver"
    if process.pid == raylet_pid:
        return "raylet"
    if process.pid == gcs_pid:
        return "gcs"
    try:
        title = " ".join(process.cmdline())
    except Exception:  # a process that ended between listing and reading
        return None
    if "RayTrainWorker" in title:
        return "training_worker"
    return "other_ray_workers" if title.startswith("ray::") else None


class Sampler(threading.Thread):
    """Peak RSS per process kind and object-store figures, every ``interval`` seconds until stopped."""

    def __init__(self, driver_pid: int, raylet_pid: int, gcs_pid: int, gcs_address: str, interval: float):
        super().__init__(daemon=True)
        from ray._private.internal_api import get_state_from_address

        self.pids = (driver_pid, raylet_pid, gcs_pid)
        self.state = get_state_from_address(gcs_address)
        self.interval, self.stop = interval, threading.Event()
        self.peak_rss = dict.fromkeys(KINDS, 0)
        self.peak_store, self.peak_total_rss = 0, 0

    def store_stats(self):
        from ray._private.internal_api import get_memory_info_reply

        return get_memory_info_reply(self.state).store_stats

    def run(self) -> None:
        import psutil  # Ray ships it (ray/thirdparty_files, on sys.path once ray is imported)

        driver_pid, raylet_pid, gcs_pid = self.pids
        while not self.stop.is_set():
            total = 0
            try:  # only this instance's processes: the machine may run other Ray instances
                mine = [psutil.Process(pid) for pid in self.pids] + psutil.Process(raylet_pid).children(recursive=True)
            except psutil.NoSuchProcess:
                mine = []
            for process in mine:
                kind = kind_of(process, *self.pids)
                if kind is None:
                    continue
                try:
                    rss = process.memory_info().rss
                except Exception:
                    continue
                total += rss
                self.peak_rss[kind] = max(self.peak_rss[kind], rss)
            self.peak_total_rss = max(self.peak_total_rss, total)
            try:
                self.peak_store = max(self.peak_store, int(self.store_stats().object_store_bytes_used))
            except Exception:
                pass
            self.stop.wait(self.interval)


# ---------------------------------------------------------------- runs

def train_command(root: str, mode: str, out: str, args) -> list[str]:
    return [sys.executable, "pipelines/train.py", "--config", "configs/demo.yaml", "--output-dir", out, "--overwrite",
            f"data.root_dir={root}", f"data.pipeline={mode}", f"data.image_size={args.image_size}",
            f"data.val_fraction={args.val_fraction}", f"data.test_fraction={args.test_fraction}",
            "model.backbone=tf_efficientnet_lite0", "train.epochs=1", f"train.max_steps_per_epoch={args.steps}",
            "train.tracking=none", f"train.cpus_per_worker={args.cpus_per_worker}", "optim.warmup_epochs=0"]


def run_one(root: str, size: int, mode: str, args, gcs_address: str, raylet_pid: int, gcs_pid: int) -> dict:
    out = os.path.join(args.out, f"{size}_{mode}")
    command = train_command(root, mode, out, args)
    env = {**os.environ, "RAY_ADDRESS": gcs_address, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    log_path = os.path.join(args.out, f"{size}_{mode}.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(process.pid, raylet_pid, gcs_pid, gcs_address, args.interval)
        spilled_before = int(sampler.store_stats().spilled_bytes_total)
        sampler.start()
        code = process.wait()
        sampler.stop.set()
        sampler.join()
    wall = time.perf_counter() - started
    record = {"size": size, "mode": mode, "exit_code": code, "wall_seconds": round(wall, 1),
              "command": " ".join(command), "log": log_path,
              "peak_rss_bytes": sampler.peak_rss, "peak_rss_all_processes_bytes": sampler.peak_total_rss,
              "object_store_peak_bytes": sampler.peak_store,
              "spilled_bytes": int(sampler.store_stats().spilled_bytes_total) - spilled_before}
    summary_path = os.path.join(out, "run.json")
    if code == 0 and os.path.exists(summary_path):
        summary = json.load(open(summary_path))
        record.update({key: summary.get(key) for key in ("images_per_second", "wall_seconds", "pipeline",
                                                         "pipeline_reason", "decoded_bytes")})
        record["train_wall_seconds"] = record.pop("wall_seconds")
        record["wall_seconds"] = round(wall, 1)
    for line in open(log_path):
        if "[cars_ray] decoded" in line:
            record["decode_line"] = line.strip()
    return record


# ---------------------------------------------------------------- tables

def gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


def print_runs(records: list[dict]) -> None:
    print("\n| images | path | exit | wall s | train img/s | driver RSS | worker RSS | raylet RSS | other workers RSS "
          "| object store peak | spilled |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in records:
        rss = r["peak_rss_bytes"]
        print(f"| {r['size']} | {r['mode']} | {r['exit_code']} | {r['wall_seconds']} | "
              f"{(r.get('images_per_second') or 0):.1f} | {gb(rss['driver'])} | {gb(rss['training_worker'])} | "
              f"{gb(rss['raylet'])} | {gb(rss['other_ray_workers'])} | {gb(r['object_store_peak_bytes'])} | "
              f"{gb(r['spilled_bytes'])} |")


def extrapolate(records: list[dict], image_size: int) -> list[dict]:
    """Both paths at 1M images, 224 and 384 px, from the largest measured size (an extrapolation, not a run).

    cached: the object store holds N x R x R x 3 bytes and every worker one more copy, on top of the worker's
    measured base (the streaming worker's RSS at the same size: the model, optimizer, libraries).
    streaming: the worker's measured peak RSS and object-store peak do not grow with N (read off the runs)
    except for the manifest rows (about 300 bytes a row in the driver and each worker).
    """
    done = [r for r in records if r["exit_code"] == 0]
    largest = max((r["size"] for r in done), default=None)
    if largest is None:
        return []
    at = {r["mode"]: r for r in done if r["size"] == largest}
    stream = at.get("streaming")
    base = stream["peak_rss_bytes"]["training_worker"] if stream else 0
    rows = []
    for side in (224, 384):
        decoded = 1_000_000 * side * side * 3
        row = {"images": 1_000_000, "side": side, "cached_object_store_bytes": decoded,
               "cached_worker_bytes": base + decoded}
        if stream:
            row["streaming_worker_bytes"] = base + 1_000_000 * 300
            # the stream's window scales with the decoded batch: (side / measured side)^2
            row["streaming_object_store_bytes"] = int(stream["object_store_peak_bytes"] * (side / image_size) ** 2)
        rows.append(row)
    return rows


def print_extrapolation(rows: list[dict]) -> None:
    if not rows:
        return
    print("\nExtrapolated to 1M images (not measured; see extrapolate() for the model):")
    print("| px | cached: object store | cached: per worker | streaming: per worker | streaming: object store |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['side']} | {gb(row['cached_object_store_bytes'])} | {gb(row['cached_worker_bytes'])} | "
              f"{gb(row.get('streaming_worker_bytes', 0))} | {gb(row.get('streaming_object_store_bytes', 0))} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--val-fraction", type=float, default=0.02)
    parser.add_argument("--test-fraction", type=float, default=0.01)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--num-cpus", type=int, default=None, help="Ray's CPUs (default: all)")
    parser.add_argument("--object-store-mb", type=int, default=None, help="Ray's object store (default: Ray's 30%%)")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--out", default="runs/data_scale")
    parser.add_argument("--data-dir", default=None, help="where datasets are generated (default OUT/data)")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    data_dir = os.path.abspath(args.data_dir or os.path.join(args.out, "data"))

    import ray

    from cars_ray.runtime import start_local_ray

    context = start_local_ray(num_cpus=args.num_cpus, include_dashboard=False, configure_logging=False,
                       object_store_memory=args.object_store_mb * 1024**2 if args.object_store_mb else None)
    node = ray._private.worker._global_node
    raylet_pid, gcs_pid = node.all_processes["raylet"][0].process.pid, node.all_processes["gcs_server"][0].process.pid
    gcs_address = context.address_info["gcs_address"]
    records = []
    try:
        for size in args.sizes:
            started = time.perf_counter()
            root = generate(os.path.join(data_dir, f"synthetic_{size}"), size, args.classes, args.width, args.height)
            print(f"[data_scale] {size} images ready in {root} ({time.perf_counter() - started:.1f}s)", flush=True)
            for mode in args.modes:
                record = run_one(root, size, mode, args, gcs_address, raylet_pid, gcs_pid)
                records.append(record)
                print(f"[data_scale] {size} {mode}: exit {record['exit_code']}, {record['wall_seconds']}s, "
                      f"{record.get('pipeline_reason', '')}", flush=True)
                write_result(args, records, context)
    finally:
        ray.shutdown()
    print_runs(records)
    print_extrapolation(extrapolate(records, args.image_size))
    return 0 if all(r["exit_code"] == 0 for r in records) else 1


def write_result(args, records: list[dict], context) -> None:
    import platform

    import ray

    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.node(), "cpus": os.cpu_count(),
              "ray_resources": ray.cluster_resources(), "args": vars(args), "runs": records,
              "extrapolation_1m": extrapolate(records, args.image_size),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True).stdout.strip()}
    tmp = os.path.join(args.out, "result.json.tmp")
    with open(tmp, "w") as handle:
        json.dump(result, handle, indent=2, default=str)
    os.replace(tmp, os.path.join(args.out, "result.json"))


if __name__ == "__main__":
    sys.exit(main())
