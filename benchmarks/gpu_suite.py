"""The run steps of benchmarks/gpu_suite.sh (read its header for staging and the device calls).

    python benchmarks/gpu_suite.py OUT [timm|plain|strong|notebook ...] [--dry-run] [--stage .stage]

Each step writes OUT/<step>.json (and OUT/<step>.log, OUT/<step>/): timm (timm's train.py with the
recipe of configs/plain.yaml), plain, strong, notebook (pipelines/train.py with that config on
split.csv). The plain step adds, when OUT/timm.json is there, the wall-time ratio to timm and both
accuracies. ``--dry-run`` runs every step on the demo sample with a tiny model, one epoch, on CPU:
the suite's own code is then checked before it meets a GPU (a test runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import time

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timm_reference import PLAIN_RECIPE, TimmRun, run_logged  # noqa: E402

from cars_ray.cli import run_main  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ("timm", "plain", "strong", "notebook")
DRY_RUN = ["data.root_dir=demo", "data.split_file=null", "data.image_size=32", "data.batch_size=8",
           "data.max_images_per_class=8",
           "data.eval_batch_size=16", "model.backbone=test_efficientnet", "model.weights=none",
           "model.bilinear_channels=16", "train.epochs=1", "train.compile=false", "train.use_gpu=false",
           "train.cpus_per_worker=1", "train.early_stop_patience=0"]


def run_timm(out: str, data: str, stage: str, dry_run: bool) -> dict | None:
    timm_dir = os.path.join(stage, "timm")
    if not os.path.isfile(os.path.join(timm_dir, "train.py")) or not os.path.isdir(data):
        if dry_run:
            print(f"timm: skipped in the dry run (needs {timm_dir}/train.py and {data})")
            return None
        sys.exit(f"error: the timm step needs {timm_dir}/train.py and {data} (bash benchmarks/gpu_suite.sh install)")
    shrink = dict(img_size=32, batch_size=8, epochs=1, device="cpu", workers=1) if dry_run else {}
    run = TimmRun(timm_dir, os.path.join(data, "split.csv"), os.path.join(data, "cropped_train"),
                  os.path.join(out, "timm"), "tf_efficientnet_lite2", shrink.get("img_size", 384),
                  shrink.get("batch_size", 64), shrink.get("epochs", 30),
                  [a for a in PLAIN_RECIPE if not (dry_run and a in ("--amp", "--amp-dtype", "bfloat16", "--pin-mem"))],
                  device=shrink.get("device", "cuda"), workers=shrink.get("workers", os.cpu_count() or 1))
    return run.run()


def run_in_process(command: list[str], log_path: str) -> float:
    """The dry run's way to run ``python pipelines/train.py ...``: the same entry point in this process, so the
    three steps share one interpreter, its imports and its Ray connection (a test runs the dry run)."""
    spec = importlib.util.spec_from_file_location("train_pipeline", command[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    started = time.perf_counter()
    with open(log_path, "w") as log, contextlib.redirect_stdout(log):
        try:
            run_main(module.main, command[2:])
        except SystemExit as exit_:
            if exit_.code:
                sys.exit(f"error: {os.path.basename(command[1])} exited with {exit_.code}; see {log_path}")
    return time.perf_counter() - started


def run_recipe(step: str, out: str, data: str, dry_run: bool) -> dict:
    run_dir = os.path.join(out, step)
    command = [sys.executable, os.path.join(REPO, "pipelines", "train.py"), "--config", os.path.join(REPO, "configs", f"{step}.yaml"),
               "--output-dir", run_dir, "--overwrite", f"data.root_dir={data}/cropped_train", f"data.split_file={data}/split.csv",
               *(DRY_RUN if dry_run else [])]
    seconds = (run_in_process if dry_run else run_logged)(command, os.path.join(out, f"{step}.log"))
    history = pd.read_csv(os.path.join(run_dir, "metrics.csv"))
    with open(os.path.join(run_dir, "evaluation", "metrics.json")) as handle:
        test = json.load(handle)
    result = {"step": step, "wall_seconds": round(seconds, 1), "epochs": int(history.epoch.max()),
              "best_val_top1": float(history.val_top1.max()), "test_top1": test["top1"], "test_top5": test["top5"],
              "test_images": test["num_images"], "train_images_per_second": round(float(history.images_per_second.mean()), 1),
              "epoch_seconds_median": round(float(history.epoch_seconds.median()), 2), "command": command,
              "dry_run": dry_run}
    timm_json = os.path.join(out, "timm.json")
    if step == "plain" and os.path.isfile(timm_json):
        with open(timm_json) as handle:
            timm = json.load(handle)
        result.update({"timm_wall_seconds": timm["wall_seconds"], "timm_test_top1": timm["test_top1"],
                       "wall_time_ratio_to_timm": round(seconds / timm["wall_seconds"], 3)})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("steps", nargs="*", help=f"some of {', '.join(STEPS)} (default: all, in that order)")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--stage", default=".stage")
    args = parser.parse_args()
    unknown = [step for step in args.steps if step not in STEPS]
    if unknown:
        sys.exit(f"error: unknown step(s) {', '.join(unknown)}; steps are {', '.join(STEPS)}")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data = os.path.abspath(os.path.join(args.stage, "data", "stanford-cars"))
    for step in args.steps or STEPS:
        started = time.time()
        result = run_timm(out, data, args.stage, args.dry_run) if step == "timm" else run_recipe(step, out, data, args.dry_run)
        if result is None:
            continue
        with open(os.path.join(out, f"{step}.json"), "w") as handle:
            json.dump(result, handle, indent=2)
        print(json.dumps({k: v for k, v in result.items() if "command" not in k}))
        print(f"[gpu_suite] {step} done in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
