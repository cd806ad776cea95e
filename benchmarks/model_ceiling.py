"""The ceiling a served replica cannot pass: the model alone, and decode + preprocess + model, in a bare loop.

    python benchmarks/model_ceiling.py [--checkpoint DIR|model.onnx] [--backends onnx torch] [--int8]
                                       [--num-cpus 1.75] [--batch 16] [--seconds 8] [--out ceiling.json]

Without --checkpoint a checkpoint of the default model (offline Lite2, 224 px, fresh 196-class head;
speed does not depend on training) is built, as ``benchmarks/serve_load.py`` builds it. Each backend is
loaded the way a Serve replica loads it (``LoadedModel.open``, ONNX Runtime capped at the threads a replica of
``--num-cpus`` CPUs gets, PyTorch set to the same count) and timed in one process, nothing else in the loop:

- ``model``: ``backend.probs`` on a batch of ``--batch`` already-decoded uint8 images;
- ``decode_model``: for each batch, ``--batch`` decodes of the JPEG serve_load sends (``Preprocessing.decode``,
  the ingress's own decode: EXIF, RGB, resize) one after the other, then ``backend.probs`` on their stack.

Each is repeated for ``--seconds`` after a warm-up; the figures are images per second over that time and the
process's CPU milliseconds per image (every thread).
``--int8`` also times an int8 export of the checkpoint (``pipelines/export.py --int8``, calibrated on the
demo sample: for speed only). Prints one JSON document and writes it to ``--out``.
``measure_ceiling`` is what serve_load calls before and after its load, so both figures come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np
from _common import DEFAULT_BACKBONE, DEFAULT_SIZE, sample_jpeg, write_checkpoint_for


def images_per_second(step, images_per_step: int, seconds: float, warmup: int = 3) -> tuple[float, float]:
    """(images per second, CPU milliseconds per image) of ``step()`` (``images_per_step`` images each) repeated
    for ``seconds`` after ``warmup`` calls. The CPU time is this process's, every thread (ONNX Runtime's too):
    on a shared machine it moves far less than the wall-clock rate, which is why serve_load compares it."""
    for _ in range(warmup):
        step()
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    images = steps * images_per_step
    return images / (time.perf_counter() - start), (time.process_time() - cpu_start) * 1000 / images


def measure_ceiling(models: dict[str, str], payload: bytes, num_cpus: float, batch: int = 16,
                    seconds: float = 8.0) -> dict[str, Any]:
    """Images/s of each model in ``models`` alone, and with the decode of ``payload`` (JPEG bytes) before it.

    ``models`` maps a label (``onnx``, ``onnx-int8``, ``torch``) to a checkpoint directory or .onnx file;
    the label is the ``backend=`` the replica would be given. Threads: ``replica_threads(num_cpus)``, what a
    Classifier replica of ``num_cpus`` CPUs gives ONNX Runtime. Returns ``{"threads", "batch", "payload_bytes",
    "load_average_before", "load_average_after", "<label>": {"model_images_per_s", "model_cpu_ms_per_image",
    "decode_model_images_per_s", "decode_model_cpu_ms_per_image", "decode_ms", "decode_cpu_ms"}}``.
    """
    import torch

    from cars_ray.inference.model import LoadedModel
    from serve.app import ServeArgs, replica_threads

    max_pixels = ServeArgs.model_fields["max_pixels"].default  # a replica's default

    threads = replica_threads(num_cpus)
    torch.set_num_threads(threads)
    result: dict[str, Any] = {"num_cpus": num_cpus, "threads": threads, "batch": batch, "seconds": seconds,
                              "payload_bytes": len(payload), "load_average_before": os.getloadavg()[0]}
    for label, path in models.items():
        backend = LoadedModel.open(path, label, num_threads=threads)
        preprocessing = backend.preprocessing
        decoded = np.stack([preprocessing.decode(payload, max_pixels=max_pixels)] * batch)

        def decode_batch() -> np.ndarray:
            return np.stack([preprocessing.decode(payload, max_pixels=max_pixels) for _ in range(batch)])

        decode_rate, decode_cpu = images_per_second(decode_batch, batch, min(seconds, 2.0))
        model_rate, model_cpu = images_per_second(lambda: backend.probs(decoded), batch, seconds)
        both_rate, both_cpu = images_per_second(lambda: backend.probs(decode_batch()), batch, seconds)
        result[label] = {"model_images_per_s": round(model_rate, 1), "model_cpu_ms_per_image": round(model_cpu, 2),
                         "decode_model_images_per_s": round(both_rate, 1),
                         "decode_model_cpu_ms_per_image": round(both_cpu, 2),
                         "decode_ms": round(1000 / decode_rate, 2), "decode_cpu_ms": round(decode_cpu, 2)}
    result["load_average_after"] = os.getloadavg()[0]
    return result


def default_checkpoint(directory: str) -> str:
    """The default model's checkpoint (offline Lite2, 224 px, a fresh 196-class head) written into ``directory``."""
    path = os.path.join(directory, "ckpt")
    write_checkpoint_for(DEFAULT_BACKBONE, "linear", DEFAULT_SIZE, path)
    return path


def int8_model(checkpoint: str, out: str) -> str:
    """The checkpoint quantised to int8 by the export pipeline (calibrated on the demo sample; for speed only)."""
    import subprocess
    import sys

    from cars_ray.config import DEMO_ROOT
    from cars_ray.data.loading import resolve_root

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, os.path.join(repo, "pipelines", "export.py"), "--checkpoint", checkpoint, "--out", out,
                    "--int8", "--calibration-dir", resolve_root(DEMO_ROOT), "--max-drop", "100"], check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a checkpoint directory or .onnx file (default: Lite2, 224 px)")
    parser.add_argument("--backends", nargs="+", default=["onnx", "torch"], choices=("onnx", "torch"))
    parser.add_argument("--int8", action="store_true", help="also an int8 export of the checkpoint (calibrated on the demo)")
    parser.add_argument("--num-cpus", type=float, default=1.75, help="the replica's CPUs; its threads follow from them")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or default_checkpoint(tmp)
        models = {backend: checkpoint for backend in args.backends
                  if not (backend == "torch" and checkpoint.endswith(".onnx"))}
        if args.int8:
            models["onnx-int8"] = int8_model(checkpoint, os.path.join(tmp, "model.int8.onnx"))
        result = {"checkpoint": args.checkpoint or f"{DEFAULT_BACKBONE} {DEFAULT_SIZE} px (fresh head)",
                  **measure_ceiling(models, sample_jpeg(), args.num_cpus, args.batch, args.seconds)}
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
