"""Batch-1 CPU latency: PyTorch eager against ONNX Runtime, same model and weights.

    python benchmarks/onnx_vs_eager.py [--backbone tf_efficientnet_lite2] [--head linear] [--size 224]
                                       [--iterations 100]

Builds a checkpoint from the offline ImageNet backbone with a fresh 196-class head (latency does
not depend on training), exports it with cars_ray.export, and times single-image inference of both
after a warm-up. Prints one JSON line (median and p95 milliseconds, speed-up).
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
    args = parser.parse_args()

    from cars_ray.checkpoint import load_model, preprocessing_of
    from cars_ray.export import OnnxClassifier, ViewedClassifier, export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = os.path.join(tmp, "ckpt")
        write_checkpoint_for(args.backbone, args.head, args.size, checkpoint)
        onnx_path = os.path.join(tmp, "model.onnx")
        export_onnx(checkpoint, onnx_path)
        model, meta = load_model(checkpoint)
        viewed = ViewedClassifier(model, preprocessing_of(meta)).eval()
        image = np.random.default_rng(0).integers(0, 255, (1, args.size, args.size, 3), dtype=np.uint8)
        tensor = torch.from_numpy(image)

        def eager():
            with torch.inference_mode():
                viewed(tensor)

        onnx_model = OnnxClassifier(onnx_path)
        torch_ms = timed(eager, args.iterations)
        onnx_ms = timed(lambda: onnx_model.logits(image), args.iterations)
    print(json.dumps({
        "backbone": args.backbone, "head": args.head, "size": args.size, "torch_threads": torch.get_num_threads(),
        "eager_ms_p50": round(float(np.median(torch_ms)), 2), "eager_ms_p95": round(float(np.percentile(torch_ms, 95)), 2),
        "onnx_ms_p50": round(float(np.median(onnx_ms)), 2), "onnx_ms_p95": round(float(np.percentile(onnx_ms, 95)), 2),
        "speedup_p50": round(float(np.median(torch_ms) / np.median(onnx_ms)), 2),
    }))


if __name__ == "__main__":
    main()
