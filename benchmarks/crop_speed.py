"""Crop-pipeline throughput on a generated set (issue: >= 360 images/s on the 2-core machine).

    python benchmarks/crop_speed.py [--images 2000] [--workdir /tmp/crop_bench]

Generates N JPEGs of about 600x400 px with random boxes in the csv layout (not timed), starts
Ray (timed separately), then times `crop_dataset` end to end: read, decode, crop, encode, atomic
write, report. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import numpy as np
from PIL import Image


def generate(root: str, count: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "imgs"), exist_ok=True)
    base = rng.integers(0, 255, (400, 600, 3), dtype=np.uint8)
    lines = ["path,label,x1,y1,x2,y2"]
    for i in range(count):
        width, height = int(rng.integers(560, 640)), int(rng.integers(380, 430))
        pixels = np.roll(base, i * 7, axis=1)[:height % 400 or 400, :width % 600 or 600]
        Image.fromarray(np.ascontiguousarray(pixels)).resize((width, height)).save(
            os.path.join(root, "imgs", f"{i:05d}.jpg"), quality=90)
        x1, y1 = int(rng.integers(0, width // 3)), int(rng.integers(0, height // 3))
        x2, y2 = int(rng.integers(x1 + 100, width)), int(rng.integers(y1 + 80, height))
        lines.append(f"imgs/{i:05d}.jpg,{i % 10 + 1},{x1},{y1},{x2},{y2}")
    with open(os.path.join(root, "names.csv"), "w") as handle:
        handle.write("class_id,class_name\n" + "".join(f"{c},Car model {c}\n" for c in range(1, 11)))
    manifest = os.path.join(root, "manifest.csv")
    with open(manifest, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workdir", default="/tmp/crop_bench")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    manifest_path = generate(os.path.join(args.workdir, "data"), args.images)

    import ray

    from cars_ray.data.crop import crop_dataset
    from cars_ray.data.layouts import read_dataset
    from cars_ray.runtime import start_local_ray

    started = time.perf_counter()
    start_local_ray(include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray_start = time.perf_counter() - started
    manifest = read_dataset(manifest_path)
    started = time.perf_counter()
    report = crop_dataset(manifest, os.path.join(args.workdir, "out"))
    elapsed = time.perf_counter() - started
    ray.shutdown()
    print(json.dumps({"images": args.images, "written": report["written"], "skipped": report["skipped"],
                      "cpus": os.cpu_count(), "ray_start_s": round(ray_start, 2), "crop_s": round(elapsed, 2),
                      "images_per_s": round(args.images / elapsed, 1)}))


if __name__ == "__main__":
    main()
