"""The model alone on CPU: PyTorch eager against ONNX Runtime (and an int8 export), same weights.

    python benchmarks/onnx_vs_eager.py [--backbone tf_efficientnet_lite2] [--head linear] [--size 224]
                                       [--iterations 100] [--batch 1] [--threads N] [--int8 model.int8.onnx]

Builds a checkpoint from the offline ImageNet backbone with a fresh 196-class head (speed does not
depend on training), exports it with cars_ray.inference.onnx, and times inference of a batch of --batch
images after a warm-up, with --threads threads for PyTorch and ONNX Runtime (default: every core).
--int8 also times an int8 file made by `pipelines/export.py --int8` (of any checkpoint of the same
backbone and size). Prints one JSON line: median and p95 milliseconds per batch, images/s, speed-up.
This is the ceiling a Serve replica cannot pass (benchmarks/serve_load.py measures the served rate).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
from _common import write_checkpoint_for


def timed(fn, iterations: int) -> np.ndarray:
    for _ in range(10):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return np.array(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tf_efficientnet_lite2")
    parser.add_argument("--head", default="linear")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch and ONNX Runtime threads (default: all cores)")
    parser.add_argument("--int8", default=None, help="an int8 .onnx file of the same backbone and size, timed too")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from cars_ray.checkpoint import load_model
    from cars_ray.inference.onnx import OnnxSession, ViewedClassifier, export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = os.path.join(tmp, "ckpt")
        write_checkpoint_for(args.backbone, args.head, args.size, checkpoint)
        onnx_path = os.path.join(tmp, "model.onnx")
        export_onnx(*load_model(checkpoint), onnx_path, checkpoint)  # (export leaves its copy in contiguous format)
        model, meta = load_model(checkpoint)
        viewed = ViewedClassifier(model, meta.preprocessing).eval()
        image = np.random.default_rng(0).integers(0, 255, (args.batch, args.size, args.size, 3), dtype=np.uint8)
        tensor = torch.from_numpy(image)

        def eager():
            with torch.inference_mode():
                viewed(tensor)

        onnx_model = OnnxSession(onnx_path, args.threads)
        times = {"eager": timed(eager, args.iterations), "onnx": timed(lambda: onnx_model.logits(image), args.iterations)}
        if args.int8:
            int8_model = OnnxSession(args.int8, args.threads)
            times["int8"] = timed(lambda: int8_model.logits(image), args.iterations)
    result = {"backbone": args.backbone, "head": args.head, "size": args.size, "batch": args.batch,
              "threads": torch.get_num_threads()}
    for name, ms in times.items():
        result.update({f"{name}_ms_p50": round(float(np.median(ms)), 2), f"{name}_ms_p95": round(float(np.percentile(ms, 95)), 2),
                       f"{name}_images_per_s": round(args.batch * 1000 / float(np.median(ms)), 1)})
    result["speedup_p50"] = round(float(np.median(times["eager"]) / np.median(times["onnx"])), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
