"""The streaming path's two sources side by side (issue #22): decode the JPEGs every epoch, or read records
decoded once to disk (``data.stream_source: decode | disk``).

    python benchmarks/stream_source.py --out DIR [--order decode,disk,decode,disk] [--steps 60] [--epochs 2]
        [--tiny] [key=value ...]
    python benchmarks/stream_source.py --out DIR --cpu-cost RECORDS_FOLDER [--images 512] [--repeats 3]

Runs ``pipelines/train.py --config configs/cpu_parity.yaml`` (the real Stanford Cars split) once per entry of
``--order``, interleaved so that a load that drifts over the session (the machine is shared) falls on both
sources alike, each run in a fresh output folder (so a disk run pays its write), with ``data.pipeline=streaming
train.cpus_per_worker=1`` (one CPU for the training worker, the rest for the Ray Data tasks), ``--epochs``
epochs of ``--steps`` steps. ``--tiny`` trains ``test_efficientnet`` without weights, a model so small that
the data path is the bottleneck, so the feed's own throughput shows. Extra ``key=value`` go to train.py.

Per run it records the 1-minute load average before and after, the wall time (this script's clock: process
start, Ray start, the records write, training, validation, the test evaluation), the records write's seconds
(from train.py's setup line) and each epoch's training images/s (metrics.csv). Writes OUT/result.json and
prints one row per run.

``--cpu-cost`` measures, without Ray or training, the CPU time one Ray Data task spends per training image on
each source (``time.process_time``, one torch thread as in a 1-CPU Ray task, so the machine's load barely moves
it): reading the record from RECORDS_FOLDER (a ``decoded/train-<key>`` folder a disk run wrote, for the same
config) or decoding the JPEG, then the random resized crop and flip both sources share; interleaved repeats
on the same ``--images`` training rows. Writes OUT/cpu_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("model.backbone=test_efficientnet", "model.weights=none")
WRITE_LINE = re.compile(r"stream source disk: .* records in .* \(([0-9.]+)s\)")


def run_one(out: str, index: int, source: str, args: argparse.Namespace) -> dict:
    folder = os.path.join(out, f"{index:02d}_{source}")
    command = [sys.executable, "pipelines/train.py", "--config", "configs/cpu_parity.yaml", "--output-dir", folder,
               "--overwrite", "data.pipeline=streaming", f"data.stream_source={source}", "train.cpus_per_worker=1",
               f"train.max_steps_per_epoch={args.steps}", f"train.epochs={args.epochs}", "train.tracking=none",
               *(TINY if args.tiny else ()), *args.overrides]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    for _ in range(2):  # on a loaded machine Ray's own start can time out (raylet waiting for its agent): once more
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": REPO, "RAY_ADDRESS": ""})
        if done.returncode == 0 or "timed out during startup" not in done.stdout + done.stderr:
            break
    wall, load_after = time.perf_counter() - started, os.getloadavg()[0]
    row = {"run": index, "source": source, "rc": done.returncode, "wall_s": round(wall, 1),
           "load_before": round(load_before, 1), "load_after": round(load_after, 1), "command": " ".join(command[1:])}
    if done.returncode != 0:
        row["error"] = (done.stdout + done.stderr)[-2000:]
        return row
    write = WRITE_LINE.search(done.stdout)
    row["records_write_s"] = float(write.group(1)) if write else None
    metrics = pd.read_csv(os.path.join(folder, "metrics.csv"))
    row["images_per_second"] = [round(float(v), 2) for v in metrics.images_per_second]
    row["train_seconds"] = [round(float(v), 1) for v in metrics.train_seconds]
    row["epoch_seconds"] = [round(float(v), 1) for v in metrics.epoch_seconds]
    return row


def cpu_cost(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from cars_ray.config import load_config
    from cars_ray.data.loading import decode_batch, load_training_table, split_rows
    from cars_ray.data.records import read_records
    from cars_ray.data.stream import random_geometry
    from cars_ray.preprocessing import Preprocessing

    torch.set_num_threads(1)
    cfg = load_config("configs/cpu_parity.yaml", [*(TINY if args.tiny else ()), *args.overrides])
    preprocessing = Preprocessing.from_config(cfg)
    _, table = load_training_table(cfg)
    rows = split_rows(table[table.split == "train"])
    sample = rows.sample(args.images, random_state=0)
    read = {"decode": lambda block: decode_batch(block, preprocessing),
            "disk": lambda block: read_records(block, args.cpu_cost)}
    costs = {"decode": [], "disk": [], "crop_and_flip": []}
    for _ in range(args.repeats):
        for source, function in read.items():
            started = time.process_time()
            blocks = [function(sample.iloc[i:i + 32]) for i in range(0, len(sample), 32)]
            costs[source].append((time.process_time() - started) / len(sample) * 1e3)
        images, row_ids = (np.concatenate([b[key] for b in blocks]) for key in ("image", "row_id"))
        started = time.process_time()
        random_geometry(images, row_ids, preprocessing.image_size, cfg.data.rrc_scale_min, cfg.data.hflip, 0, 1)
        costs["crop_and_flip"].append((time.process_time() - started) / len(sample) * 1e3)
    result = {f"{name}_ms_per_image": [round(v, 3) for v in values] for name, values in costs.items()}
    crop = min(costs["crop_and_flip"])
    result["task_ms_per_image"] = {source: round(min(costs[source]) + crop, 3) for source in read}
    result["images"], result["load_average"] = args.images, round(os.getloadavg()[0], 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--order", default="decode,disk,decode,disk")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--cpu-cost", metavar="RECORDS_FOLDER", default=None)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.cpu_cost:
        result = cpu_cost(args)
        print(json.dumps(result))
        with open(os.path.join(args.out, "cpu_cost.json"), "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
        return 0
    rows = []
    for index, source in enumerate(args.order.split(",")):
        rows.append(run_one(args.out, index, source, args))
        print(json.dumps(rows[-1] if rows[-1]["rc"] == 0 else {k: v for k, v in rows[-1].items() if k != "command"}),
              flush=True)
        with open(os.path.join(args.out, "result.json"), "w", encoding="utf-8") as handle:
            json.dump({"tiny": args.tiny, "steps": args.steps, "epochs": args.epochs, "runs": rows}, handle, indent=1)
    return 0 if all(row["rc"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
