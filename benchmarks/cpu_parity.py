"""CPU parity with timm (issue #10): the same small recipe through timm's train.py and through
cars_ray, one after the other on the same machine, on split.csv of the shared Stanford Cars copy.

    python benchmarks/cpu_parity.py --timm-dir DIR [--data-root ../shared/data/stanford-cars]
        [--out runs/cpu_parity] [--quick] [--only timm|cars_ray]

DIR holds timm's ``train.py`` and ``validate.py`` (from timm's source repository). The recipe is
``configs/cpu_parity.yaml`` (Lite0, 128 px, batch 32, 4 epochs, AdamW 3e-3, ...), given to timm
in its own arguments below. ``--quick`` trains 2 epochs on the first 50 classes, for iteration
only; the recorded figure is the full run (12-16 minutes per framework on 2 cores).

Writes OUT/result.json (both runs' test top-1/top-5, wall times, training images/s, commands,
evaluation views) and OUT/curves.png (validation top-1 per epoch of both). Wall times count
everything a user waits for: process start, Ray start and the one decode (cars_ray), per-epoch
validation and the final test evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timm_reference import TimmRun, run_logged  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/cpu_parity.yaml"
# configs/cpu_parity.yaml in timm's words
CPU_RECIPE = ["--opt", "adamw", "--lr", "3e-3", "--weight-decay", "0.05", "--sched", "cosine", "--warmup-epochs", "1",
              "--min-lr", "0", "--smoothing", "0.1", "--drop", "0.2", "--scale", "0.08", "1.0", "--hflip", "0.5",
              "--color-jitter", "0.4", "--channels-last", "--log-interval", "20"]
QUICK_CLASSES, QUICK_EPOCHS = 50, 2


def quick_split(split_file: str, out: str) -> str:
    """The rows of the first QUICK_CLASSES classes, for a short iteration run."""
    split = pd.read_csv(split_file)
    path = os.path.join(out, "split_quick.csv")
    split[split.class_id <= QUICK_CLASSES].to_csv(path, index=False)
    return path


def run_cars_ray(split_file: str, images_root: str, out: str, epochs: int) -> dict:
    """pipelines/train.py on the parity config; the wall clock is the whole command's."""
    run_dir = os.path.join(out, "cars_ray")
    command = [sys.executable, os.path.join(REPO, "pipelines", "train.py"), "--config", os.path.join(REPO, CONFIG),
               "--output-dir", run_dir, "--overwrite", f"data.root_dir={images_root}", f"data.split_file={split_file}",
               f"train.epochs={epochs}"]
    seconds = run_logged(command, os.path.join(out, "cars_ray.log"))
    history = pd.read_csv(os.path.join(run_dir, "metrics.csv"))
    with open(os.path.join(run_dir, "evaluation", "metrics.json")) as handle:
        test = json.load(handle)
    return {
        "wall_seconds": round(seconds, 1), "epochs": int(history.epoch.max()),
        "val_top1_per_epoch": [round(float(v), 4) for v in history.val_top1],
        "best_val_top1": float(history.val_top1.max()),
        "test_top1": test["top1"], "test_top5": test["top5"], "test_images": test["num_images"],
        "train_images_per_second": round(float(history.images_per_second.mean()), 2),
        "command": command,
        "eval_view": "cars_ray's: the whole crop squashed to 128 x 128 (bicubic, crop_pct 1.0)",
    }


def curves_png(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    for name, run in result["runs"].items():
        values = run["val_top1_per_epoch"]
        axis.plot(range(1, len(values) + 1), values, marker="o",
                  label=f"{name}: test top-1 {run['test_top1']:.3f}, {run['wall_seconds']:.0f} s")
    axis.set(xlabel="epoch", ylabel="validation top-1", title="CPU parity: " + result["recipe"])
    axis.grid(alpha=0.3)
    axis.legend()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timm-dir", help="folder with timm's train.py and validate.py (needed unless --only cars_ray)")
    parser.add_argument("--data-root", default=os.path.join(REPO, "..", "shared", "data", "stanford-cars"))
    parser.add_argument("--out", default="runs/cpu_parity")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs on {QUICK_CLASSES} classes")
    parser.add_argument("--only", choices=("timm", "cars_ray"), default=None)
    args = parser.parse_args()
    split_file = os.path.join(args.data_root, "split.csv")
    images_root = os.path.join(args.data_root, "cropped_train")
    if not os.path.isfile(split_file):
        sys.exit(f"error: --data-root {args.data_root} has no split.csv")
    if args.only != "cars_ray" and not args.timm_dir:
        sys.exit("error: --timm-dir is needed to run timm's train.py (or pass --only cars_ray)")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    epochs = QUICK_EPOCHS if args.quick else 4
    if args.quick:
        split_file = quick_split(split_file, out)
    result_path = os.path.join(out, "result.json")
    result = json.load(open(result_path)) if args.only and os.path.exists(result_path) else {"runs": {}}
    result.update({"recipe": f"Lite0, 128 px, batch 32, {epochs} epochs, AdamW 3e-3" + (" (quick)" if args.quick else ""),
                   "split_file": split_file, "machine": f"{os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d")})
    if args.only != "cars_ray":
        timm = TimmRun(args.timm_dir, split_file, images_root, os.path.join(out, "timm"), "tf_efficientnet_lite0",
                       128, 32, epochs, CPU_RECIPE, device="cpu", workers=os.cpu_count() or 1, eval_batch_size=64)
        result["runs"]["timm"] = timm.run()
    if args.only != "timm":
        result["runs"]["cars_ray"] = run_cars_ray(split_file, images_root, out, epochs)
    if {"timm", "cars_ray"} <= set(result["runs"]):
        ours, theirs = result["runs"]["cars_ray"], result["runs"]["timm"]
        result["wall_time_ratio"] = round(ours["wall_seconds"] / theirs["wall_seconds"], 3)
        result["test_top1_difference"] = round(ours["test_top1"] - theirs["test_top1"], 4)
    with open(result_path, "w") as handle:
        json.dump(result, handle, indent=2)
    curves_png(result, os.path.join(out, "curves.png"))
    print(json.dumps({name: {k: v for k, v in run.items() if "command" not in k} for name, run in result["runs"].items()},
                     indent=2))
    for key in ("wall_time_ratio", "test_top1_difference"):
        if key in result:
            print(f"{key}: {result[key]}")


if __name__ == "__main__":
    main()
