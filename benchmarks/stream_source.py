"""The streaming path's two sources side by side (issue #22): decode the JPEGs every epoch, or read records
decoded once to disk (``data.stream_source: decode | disk``).

    python benchmarks/stream_source.py --out DIR [--order decode,disk,decode,disk] [--steps 60] [--epochs 2]
        [--tiny] [key=value ...]

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--order", default="decode,disk,decode,disk")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
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
