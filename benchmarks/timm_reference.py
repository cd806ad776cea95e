"""timm's own ``train.py``/``validate.py`` on our benchmark split: the peer run of every comparison.

    python benchmarks/timm_reference.py --timm-dir DIR [--data-root ../shared/data/stanford-cars]
        [--work runs/timm_reference] [--device cuda] [-- extra train.py arguments]

DIR holds ``train.py`` and ``validate.py`` from the timm source repository (they are not part of
the pip package; ``git show HEAD:train.py`` of a fetched timm repository). For a run this module

1. links the ``train``/``val``/``test`` rows of a split file into ImageFolder trees with folders
   ``c001``..``c196`` and a class map in class-id order, so timm's label k is our class index k;
2. writes the offline ImageNet weights (mapped onto timm's keys, as cars_ray does) to a file for
   ``--pretrained-path``;
3. runs ``train.py`` with the recipe given, timing its wall clock, selecting on val;
4. evaluates timm's best checkpoint on the test rows with ``validate.py``;

and returns (and writes to ``WORK/result.json``) wall seconds, per-epoch validation top-1,
training images/s, test top-1/top-5 and the command lines. Run as a script it uses the recipe of
``configs/plain.yaml`` (Lite2, 384 px, 30 epochs; the GPU comparison); ``benchmarks/cpu_parity.py``
imports it with the CPU parity recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pandas as pd

# configs/plain.yaml in timm's words (AdamW 1e-3, cosine, 2 warm-up epochs, label smoothing 0.1, ...)
PLAIN_RECIPE = ["--opt", "adamw", "--lr", "1e-3", "--weight-decay", "0.05", "--sched", "cosine",
                "--warmup-epochs", "2", "--smoothing", "0.1", "--drop", "0.2", "--scale", "0.08", "1.0",
                "--color-jitter", "0.4", "--amp", "--amp-dtype", "bfloat16", "--channels-last", "--pin-mem"]
# timm logs "(0.871s,  36.75/s)": the running average of one update's time and images/s in the epoch.
RATE = re.compile(r"Train: (\d+) .*\(\s*[\d.]+s,\s*([\d.]+)/s\)")


@dataclass
class TimmRun:
    """One train.py + validate.py run of timm on a split file."""

    timm_dir: str
    split_file: str
    images_root: str
    work: str
    backbone: str
    img_size: int
    batch_size: int
    epochs: int
    recipe: list[str]
    device: str = "cuda"
    workers: int = os.cpu_count() or 1
    eval_batch_size: int = 128
    extra: list[str] = field(default_factory=list)

    def common_args(self, folders: str) -> list[str]:
        return ["--model", self.backbone, "--num-classes", "196", "--class-map", os.path.join(folders, "class_map.txt"),
                "--img-size", str(self.img_size), "--device", self.device, "--workers", str(self.workers)]

    def run(self) -> dict:
        for script in ("train.py", "validate.py"):
            if not os.path.isfile(os.path.join(self.timm_dir, script)):
                sys.exit(f"error: --timm-dir {self.timm_dir} has no {script} (take it from timm's source repository)")
        work = os.path.abspath(self.work)
        folders, weights, output = (os.path.join(work, name) for name in ("folders", "imagenet.pth", "output"))
        os.makedirs(output, exist_ok=True)
        counts = link_split(self.split_file, self.images_root, folders)
        write_weights(self.backbone, weights)
        amp = ["--amp", "--amp-dtype", "bfloat16"] if "--amp" in self.recipe else []
        train = [sys.executable, os.path.join(self.timm_dir, "train.py"), "--data-dir", folders,
                 "--train-split", "train", "--val-split", "val", "--pretrained", "--pretrained-path", weights,
                 "--epochs", str(self.epochs), "--batch-size", str(self.batch_size), "--output", output,
                 "--experiment", "run", "--checkpoint-hist", "1", *self.common_args(folders), *self.recipe, *self.extra]
        results_file = os.path.join(work, "test.json")
        validate = [sys.executable, os.path.join(self.timm_dir, "validate.py"), "--data-dir", folders, "--split", "test",
                    "--checkpoint", os.path.join(output, "run", "model_best.pth.tar"),
                    "--batch-size", str(self.eval_batch_size), "--results-file", results_file,
                    "--results-format", "json", *amp, *self.common_args(folders)]
        if os.path.exists(os.path.join(output, "run")):
            sys.exit(f"error: {os.path.join(output, 'run')} exists from an earlier run; remove it or pick another --work")
        train_seconds = run_logged(train, os.path.join(work, "train.log"))
        test_seconds = run_logged(validate, os.path.join(work, "validate.log"))
        summary = pd.read_csv(os.path.join(output, "run", "summary.csv"))
        with open(results_file) as handle:
            test = json.load(handle)
        result = {
            "train_wall_seconds": round(train_seconds, 1), "test_wall_seconds": round(test_seconds, 1),
            "wall_seconds": round(train_seconds + test_seconds, 1), "epochs": int(summary.epoch.max()) + 1,
            # timm reports percentages; cars_ray reports fractions
            "val_top1_per_epoch": [round(float(v) / 100, 4) for v in summary.eval_top1],
            "best_val_top1": float(summary.eval_top1.max()) / 100,
            "test_top1": float(test["top1"]) / 100, "test_top5": float(test["top5"]) / 100,
            "train_images_per_second": train_rate(os.path.join(work, "train.log")),
            "images": counts, "train_command": train, "validate_command": validate,
            "eval_view": f"timm's: resize the short side to img_size / crop_pct, centre crop {self.img_size} px "
                         "(crop_pct from the model's pretrained config)",
        }
        with open(os.path.join(work, "result.json"), "w") as handle:
            json.dump(result, handle, indent=2)
        return result


def link_split(split_file: str, images_root: str, folders: str) -> dict[str, int]:
    """ImageFolder trees of symlinks, one per split, and ``class_map.txt`` (all 196 class folders in
    id order: timm would otherwise number only the classes a split happens to hold). Images per split."""
    split = pd.read_csv(split_file)
    os.makedirs(folders, exist_ok=True)
    with open(os.path.join(folders, "class_map.txt"), "w") as handle:
        handle.writelines(f"c{class_id:03d}\n" for class_id in range(1, 197))
    images = os.path.abspath(images_root)
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


def write_weights(backbone: str, path: str) -> None:
    import torch

    from cars_ray.models.weights import load_offline_imagenet

    torch.save(load_offline_imagenet(backbone), path)


def run_logged(command: list[str], log_path: str) -> float:
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
        sys.exit(f"error: {os.path.basename(command[1])} exited with {code}; see {log_path}")
    return time.perf_counter() - started


def train_rate(log_path: str) -> float:
    """Training images/s over the run: the last running average timm logged in each epoch, averaged."""
    last_per_epoch: dict[int, float] = {}
    with open(log_path) as handle:
        for line in handle:
            match = RATE.search(line)
            if match:
                last_per_epoch[int(match.group(1))] = float(match.group(2))
    return round(sum(last_per_epoch.values()) / max(1, len(last_per_epoch)), 2)


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
    if not os.path.isfile(os.path.join(args.data_root, "split.csv")):
        sys.exit(f"error: --data-root {args.data_root} has no split.csv")
    result = TimmRun(args.timm_dir, os.path.join(args.data_root, "split.csv"), os.path.join(args.data_root, "cropped_train"),
                     args.work, "tf_efficientnet_lite2", args.img_size, args.batch_size, args.epochs, PLAIN_RECIPE,
                     args.device, args.workers, extra=args.extra).run()
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("command")}))


if __name__ == "__main__":
    main()
