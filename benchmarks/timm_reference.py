"""The peer run of issue #6: timm's own ``train.py`` fine-tuning Lite2 on our benchmark split.

    python benchmarks/timm_reference.py --timm-dir DIR [--data-root ../shared/data/stanford-cars]
        [--work runs/timm_reference] [--epochs 30] [--img-size 384] [--batch-size 64]
        [--device cuda] [--workers N] [-- extra train.py arguments]

DIR holds ``train.py`` and ``validate.py`` from the timm source repository at the version installed
(they are not part of the pip package). The script

1. links the ``train``/``val``/``test`` rows of ``split.csv`` into ImageFolder trees with folders
   ``c001``..``c196`` and a class map in class-id order, so timm's label k is our class index k;
2. writes the offline ImageNet Lite2 weights (mapped onto timm's keys, as cars_ray does) to a
   file for ``--pretrained-path``;
3. runs ``train.py`` with the recipe of ``configs/plain.yaml`` (AdamW 1e-3, cosine, 2 warm-up
   epochs, label smoothing 0.1, bf16, channels_last), timing its wall clock, selecting on val;
4. evaluates timm's best checkpoint on the test rows with ``validate.py``;

and writes ``WORK/result.json`` (wall seconds, best val top-1, test top-1/top-5, command lines).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pandas as pd
import torch

RECIPE = ["--opt", "adamw", "--lr", "1e-3", "--weight-decay", "0.05", "--sched", "cosine",
          "--warmup-epochs", "2", "--smoothing", "0.1", "--drop", "0.2", "--amp", "--amp-dtype", "bfloat16",
          "--channels-last", "--pin-mem"]


def link_split(data_root: str, folders: str) -> dict[str, int]:
    """ImageFolder trees of symlinks, one per split, and ``class_map.txt`` (all class folders in id
    order: timm would otherwise number only the classes a split happens to hold). Images per split."""
    split = pd.read_csv(os.path.join(data_root, "split.csv"))
    os.makedirs(folders, exist_ok=True)
    with open(os.path.join(folders, "class_map.txt"), "w") as handle:
        handle.writelines(f"c{class_id:03d}\n" for class_id in range(1, int(split.class_id.max()) + 1))
    images = os.path.join(os.path.abspath(data_root), "cropped_train")
    counts = {}
    for name, rows in split.groupby("split"):
        for row in rows.itertuples():
            target_dir = os.path.join(folders, name, f"c{int(row.class_id):03d}")
            os.makedirs(target_dir, exist_ok=True)
            link = os.path.join(target_dir, os.path.basename(row.path))
            if not os.path.lexists(link):
                os.symlink(os.path.join(images, row.path), link)
        counts[name] = len(rows)
    return counts


def write_weights(path: str) -> None:
    from cars_ray.models.weights import load_offline_imagenet

    torch.save(load_offline_imagenet("tf_efficientnet_lite2"), path)


def run(command: list[str], log_path: str) -> float:
    """Run with output shown and logged; seconds of wall clock. Fails loudly on a non-zero exit."""
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = process.wait()
    if code != 0:
        sys.exit(f"error: {command[1]} exited with {code}; see {log_path}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timm-dir", required=True, help="folder with timm's train.py and validate.py")
    parser.add_argument("--data-root", default="../shared/data/stanford-cars")
    parser.add_argument("--work", default="runs/timm_reference")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--img-size", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("extra", nargs="*", help="more train.py arguments (after --)")
    args = parser.parse_args()
    for script in ("train.py", "validate.py"):
        if not os.path.isfile(os.path.join(args.timm_dir, script)):
            sys.exit(f"error: --timm-dir {args.timm_dir} has no {script} (take it from timm's source repository)")
    if not os.path.isfile(os.path.join(args.data_root, "split.csv")):
        sys.exit(f"error: --data-root {args.data_root} has no split.csv")

    work = os.path.abspath(args.work)
    folders, weights, output = (os.path.join(work, name) for name in ("folders", "lite2_imagenet.pth", "output"))
    os.makedirs(output, exist_ok=True)
    counts = link_split(args.data_root, folders)
    write_weights(weights)
    common = ["--model", "tf_efficientnet_lite2", "--num-classes", "196",
              "--class-map", os.path.join(folders, "class_map.txt"), "--img-size", str(args.img_size),
              "--device", args.device, "--workers", str(args.workers)]
    train = [sys.executable, os.path.join(args.timm_dir, "train.py"), "--data-dir", folders,
             "--train-split", "train", "--val-split", "val", "--pretrained", "--pretrained-path", weights,
             "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--output", output,
             "--experiment", "lite2", *common, *RECIPE, *args.extra]
    train_seconds = run(train, os.path.join(work, "train.log"))
    summary = pd.read_csv(os.path.join(output, "lite2", "summary.csv"))
    results_file = os.path.join(work, "test.json")
    validate = [sys.executable, os.path.join(args.timm_dir, "validate.py"), "--data-dir", folders, "--split", "test",
                "--checkpoint", os.path.join(output, "lite2", "model_best.pth.tar"), "--batch-size", "128",
                "--amp", "--amp-dtype", "bfloat16", "--results-file", results_file, "--results-format", "json",
                *common]
    run(validate, os.path.join(work, "validate.log"))
    with open(results_file) as handle:
        test = json.load(handle)
    result = {
        "train_wall_seconds": round(train_seconds, 1), "epochs": int(summary.epoch.max()) + 1,
        # timm reports percentages; cars_ray reports fractions
        "best_val_top1": float(summary.eval_top1.max()) / 100, "test_top1": float(test["top1"]) / 100,
        "test_top5": float(test["top5"]) / 100, "images": counts, "train_command": train, "validate_command": validate,
    }
    with open(os.path.join(work, "result.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("command")}))


if __name__ == "__main__":
    main()
