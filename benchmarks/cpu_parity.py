"""CPU parity with timm (issue #10): the same small recipe through timm's train.py and through
cars_ray, one after the other on the same machine, on split.csv of the shared Stanford Cars copy.

    python benchmarks/cpu_parity.py --timm-dir DIR [--data-root ../shared/data/stanford-cars]
        [--out runs/cpu_parity] [--quick] [--order timm,cars_ray,timm] [--max-steps N]
        [--stream-source decode|disk]

Runs: ``timm``; ``cars_ray`` (the config as it is: ``data.pipeline`` auto, which keeps this data cached, both
CPUs to the one worker); ``streaming`` (``data.pipeline=streaming``, the worker reserving all CPUs but one, since the decode
tasks need a CPU it does not hold, and computing on all of them, ``train.torch_threads``: the decode takes a
few percent of a CPU). ``--order cars_ray,streaming,cars_ray,streaming`` interleaves the
two data paths so the machine's drift falls on both (issue #22: streaming's training images/s against
cached, in the same session); ``--max-steps`` caps every epoch (``train.max_steps_per_epoch``) for a speed-only
comparison whose test top-1 is not the recipe's; ``--stream-source`` is the streaming runs' ``data.stream_source``.

DIR holds timm's ``train.py`` and ``validate.py`` (from timm's source repository). The recipe is
``configs/cpu_parity.yaml`` (Lite0, 128 px, batch 32, 4 epochs, AdamW 3e-3, ...), given to timm
in its own arguments below. ``--quick`` trains 2 epochs on the first 50 classes, for iteration
only; the recorded figure is the full run (12-16 minutes per framework on 2 cores).

Writes OUT/result.json (every run's test top-1/top-5, wall time, training images/s, command,
evaluation view, and the machine's speed just before it) and OUT/curves.png (validation top-1 per
epoch). Wall times count everything a user waits for: process start, Ray start and the one decode
(cars_ray), per-epoch validation and the final test evaluation. timm runs before and after
cars_ray by default, and the ratio is taken against the mean of its two wall times: the 2-core
machine's speed drifts by tens of percent within minutes (machine_speed_before shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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


def run_cars_ray(split_file: str, images_root: str, out: str, key: str, epochs: int, streaming: bool = False,
                 max_steps: int = 0, stream_source: str = "decode") -> dict:
    """pipelines/train.py on the parity config (streaming: ``data.pipeline=streaming`` with the worker reserving
    all CPUs but one and computing on all); the wall clock is the whole command's."""
    run_dir = os.path.join(out, key)
    command = [sys.executable, os.path.join(REPO, "pipelines", "train.py"), "--config", os.path.join(REPO, CONFIG),
               "--output-dir", run_dir, "--overwrite", f"data.root_dir={images_root}", f"data.split_file={split_file}",
               f"train.epochs={epochs}"]
    if streaming:
        cpus = os.cpu_count() or 2
        command += ["data.pipeline=streaming", f"train.cpus_per_worker={max(1, cpus - 1)}", f"train.torch_threads={cpus}",
                    f"data.stream_source={stream_source}"]
    if max_steps:
        command += [f"train.max_steps_per_epoch={max_steps}"]
    load_before = os.getloadavg()[0]
    seconds = run_logged(command, os.path.join(out, f"{key}.log"))
    history = pd.read_csv(os.path.join(run_dir, "metrics.csv"))
    with open(os.path.join(run_dir, "evaluation", "metrics.json")) as handle:
        test = json.load(handle)
    return {
        "wall_seconds": round(seconds, 1), "epochs": int(history.epoch.max()),
        "val_top1_per_epoch": [round(float(v), 4) for v in history.val_top1],
        "best_val_top1": float(history.val_top1.max()),
        "test_top1": test["top1"], "test_top5": test["top5"], "test_images": test["num_images"],
        "train_images_per_second": round(float(history.images_per_second.mean()), 2),
        "pipeline": "streaming" if streaming else "config (auto: cached)",
        "load_average_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
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


def machine_speed() -> float:
    """The model alone (Lite0, 128 px, batch 32, AdamW, channels_last, 2 threads, synthetic input) in a fresh
    process: training images/s right now. Measured before every run: a shared 2-core machine drifts by
    tens of percent within minutes, and this shows by how much."""
    code = """
import time, torch, timm
torch.set_num_threads(2)
model = timm.create_model("tf_efficientnet_lite0", num_classes=196).to(memory_format=torch.channels_last)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randn(32, 3, 128, 128).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 196, (32,))
for step in range(13):
    if step == 3:
        started = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(320 / (time.perf_counter() - started))
"""
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return round(float(output.strip().splitlines()[-1]), 1)


def summarize(result: dict) -> None:
    """Wall-time ratio against the mean of timm's runs (timm ran before and after cars_ray), accuracy gap."""
    runs = result["runs"]
    cached = [run for name, run in runs.items() if name.startswith("cars_ray")]
    streamed = [run for name, run in runs.items() if name.startswith("streaming")]
    if cached and streamed:  # issue #22: streaming against cached, means over the interleaved runs
        def mean(values):
            return sum(values) / len(values)
        result["streaming_over_cached_images_per_second"] = round(
            mean([r["train_images_per_second"] for r in streamed]) / mean([r["train_images_per_second"] for r in cached]), 3)
        result["streaming_minus_cached_test_top1"] = round(
            mean([r["test_top1"] for r in streamed]) - mean([r["test_top1"] for r in cached]), 4)
    timm_runs = [run for name, run in runs.items() if name.startswith("timm")]
    ours = runs.get("cars_ray")
    if not (timm_runs and ours):
        return
    timm_wall = sum(run["wall_seconds"] for run in timm_runs) / len(timm_runs)
    result["timm_mean_wall_seconds"] = round(timm_wall, 1)
    result["wall_time_ratio"] = round(ours["wall_seconds"] / timm_wall, 3)
    result["test_top1_difference"] = round(ours["test_top1"] - timm_runs[0]["test_top1"], 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timm-dir", help="folder with timm's train.py and validate.py (needed unless --order cars_ray)")
    parser.add_argument("--data-root", default=os.path.join(REPO, "..", "shared", "data", "stanford-cars"))
    parser.add_argument("--out", default="runs/cpu_parity")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs on {QUICK_CLASSES} classes")
    parser.add_argument("--order", default="timm,cars_ray,timm",
                        help="runs in order (default timm,cars_ray,timm: timm before and after cancels the machine's drift)")
    parser.add_argument("--max-steps", type=int, default=0, help="cap every epoch at N steps (speed only)")
    parser.add_argument("--stream-source", default="decode", choices=("decode", "disk"),
                        help="the streaming runs' data.stream_source")
    args = parser.parse_args()
    order = args.order.split(",")
    if set(order) - {"timm", "cars_ray", "streaming"}:
        sys.exit(f"error: --order names runs timm, cars_ray and streaming only, got {args.order}")
    split_file = os.path.join(args.data_root, "split.csv")
    images_root = os.path.join(args.data_root, "cropped_train")
    if not os.path.isfile(split_file):
        sys.exit(f"error: --data-root {args.data_root} has no split.csv")
    if "timm" in order and not args.timm_dir:
        sys.exit("error: --timm-dir is needed to run timm's train.py")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    epochs = QUICK_EPOCHS if args.quick else 4
    if args.quick:
        split_file = quick_split(split_file, out)
    result_path = os.path.join(out, "result.json")
    result = {"recipe": f"Lite0, 128 px, batch 32, {epochs} epochs, AdamW 3e-3" + (" (quick)" if args.quick else "")
              + (f", at most {args.max_steps} steps per epoch (speed only)" if args.max_steps else ""),
              "split_file": split_file, "machine": f"{os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
              "order": order, "stream_source": args.stream_source, "runs": {}}
    for index, name in enumerate(order):
        key = name if name not in result["runs"] else f"{name}_{index + 1}"
        speed = machine_speed()
        if name == "timm":
            run = TimmRun(args.timm_dir, split_file, images_root, os.path.join(out, key), "tf_efficientnet_lite0",
                          128, 32, epochs, CPU_RECIPE, device="cpu", workers=os.cpu_count() or 1,
                          eval_batch_size=64).run()
        else:
            run = run_cars_ray(split_file, images_root, out, key, epochs, name == "streaming", args.max_steps,
                               args.stream_source)
        result["runs"][key] = {**run, "machine_speed_before": speed}
        summarize(result)
        with open(result_path, "w") as handle:  # after every run: a later failure keeps the earlier ones
            json.dump(result, handle, indent=2)
    curves_png(result, os.path.join(out, "curves.png"))
    print(json.dumps({name: {k: v for k, v in run.items() if "command" not in k} for name, run in result["runs"].items()},
                     indent=2))
    for key in ("timm_mean_wall_seconds", "wall_time_ratio", "test_top1_difference",
                "streaming_over_cached_images_per_second", "streaming_minus_cached_test_top1"):
        if key in result:
            print(f"{key}: {result[key]}")


if __name__ == "__main__":
    main()
