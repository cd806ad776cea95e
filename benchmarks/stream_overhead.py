"""What the stream costs the model in its own process (issue #22): a Ray actor of one reserved CPU trains the parity
model (Lite0, 128 px, batch 32, AdamW) on batches of the streaming path, or on one fixed batch without a stream.

    python benchmarks/stream_overhead.py [--steps 40] [--threads 2] [--repeats 2]
        [--variants model,stream,stream-spin] [--out result.json]

The actor stands in for a streaming training worker (``train.cpus_per_worker=1``, ``train.torch_threads``):
it holds one of the local Ray's CPUs, so the stream's Ray Data tasks get the other ones. Variants:

- ``model``: the model alone on one fixed uint8 batch (no stream): the actor's ceiling;
- ``stream``: ``StreamedSplit.train_batches`` of the real train split of ``configs/cpu_parity.yaml``, as the
  training loop gets them (the code as it is: idle scheduling steps paused);
- ``stream-spin``: the same without ``IdleStepBackoff`` (Ray 2.60's loop as it comes).

Each variant runs ``--repeats`` times, interleaved, in a fresh local Ray; the first 2 steps are not timed. Per
run: images/s, the actor's CPU (process time over wall time: cores), and the share of the wall time spent
waiting for a batch. Writes OUT (JSON) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
VARIANTS = ("model", "stream", "stream-spin")


def parity_train_split():
    """(train rows as ``split_rows`` gives them, preprocessing, rrc_scale_min) of ``configs/cpu_parity.yaml`` on
    the shared copy: read once, before any run."""
    from cars_ray.config import load_config
    from cars_ray.data.loading import load_training_table, split_rows
    from cars_ray.preprocessing import Preprocessing

    data = os.path.join(REPO, "..", "shared", "data", "stanford-cars")
    cfg = load_config(os.path.join(REPO, "configs", "cpu_parity.yaml"),
                      [f"data.root_dir={os.path.join(data, 'cropped_train')}", f"data.split_file={os.path.join(data, 'split.csv')}"])
    _, table = load_training_table(cfg)
    return split_rows(table[table.split == "train"]), Preprocessing.from_config(cfg), cfg.data.rrc_scale_min


def run_variant(variant: str, split: tuple, steps: int, threads: int) -> dict:
    """One run of ``variant`` in a fresh local Ray, on ``split`` (:func:`parity_train_split`)."""
    import ray

    from cars_ray.runtime import start_local_ray

    rows, preprocessing, scale_min = split
    start_local_ray(include_dashboard=False, log_to_driver=False)
    try:
        worker = ray.remote(num_cpus=1)(Trainer).remote()
        return ray.get(worker.run.remote(variant, ray.put(rows), preprocessing, scale_min, steps, threads))
    finally:
        ray.shutdown()


class Trainer:
    """The actor: the parity model's training step on streamed or fixed batches."""

    def run(self, variant: str, rows, preprocessing, scale_min: float, steps: int, threads: int) -> dict:
        import timm
        import torch

        from cars_ray.data.blocks import IdleStepBackoff
        from cars_ray.data.stream import StreamedSplit

        torch.set_num_threads(threads)
        if variant == "stream-spin":
            IdleStepBackoff.on_execution_step = lambda self, executor: None
        model = timm.create_model("tf_efficientnet_lite0", num_classes=196).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), 3e-3)
        if variant == "model":
            fixed = (torch.randint(0, 256, (32, 128, 128, 3), dtype=torch.uint8), torch.randint(0, 196, (32,)))
            batches = iter([fixed] * (steps + 3))
        else:
            split = StreamedSplit(rows, preprocessing, "standard", scale_min, 0.5, 32)
            batches = split.train_batches(0, 1, 0, 1, 32, torch.device("cpu"))
        images, waited, asked = 0, 0.0, time.perf_counter()
        for step, (x, y) in enumerate(batches):
            if step == 2:  # warm: the timing starts now
                started, cpu_started, images, waited = time.perf_counter(), time.process_time(), 0, 0.0
            elif step > 2:
                waited += time.perf_counter() - asked
            x = x.permute(0, 3, 1, 2).float().div_(255).contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            images += len(y) if step >= 2 else 0
            if step >= steps + 1:
                break
            asked = time.perf_counter()
        getattr(batches, "close", lambda: None)()
        wall = time.perf_counter() - started
        return {"variant": variant, "threads": threads, "images": images, "images_per_s": round(images / wall, 2),
                "actor_cores": round((time.process_time() - cpu_started) / wall, 2),
                "waiting_share": round(waited / wall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per run")
    parser.add_argument("--threads", type=int, default=2, help="the actor's torch threads (train.torch_threads)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; the variants are {', '.join(VARIANTS)}")
    split, runs = parity_train_split(), []
    for repeat in range(args.repeats):
        for variant in variants:
            load = os.getloadavg()[0]
            result = {**run_variant(variant, split, args.steps, args.threads), "repeat": repeat + 1, "load_before": load}
            runs.append(result)
            print(json.dumps(result), flush=True)
    document = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "steps": args.steps, "runs": runs}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(document, handle, indent=2)
    print(f"\n{'variant':18} {'repeat':>6} {'images/s':>9} {'actor cores':>11} {'waiting':>8} {'load':>5}")
    for run in runs:
        print(f"{run['variant']:18} {run['repeat']:6d} {run['images_per_s']:9.1f} {run['actor_cores']:11.2f} "
              f"{run['waiting_share']:8.3f} {run['load_before']:5.1f}")


if __name__ == "__main__":
    main()
