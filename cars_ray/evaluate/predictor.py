"""Scoring decoded Ray Data batches with a model: an actor pool, or the driver for small CPU-only jobs.

The model itself (backends, choice of backend, metadata) comes from :mod:`cars_ray.inference`.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import ray

from cars_ray.checkpoint import MODEL_FILE, CheckpointMeta
from cars_ray.inference.model import LoadedModel
from cars_ray.inference.onnx import is_onnx_file
from cars_ray.storage import check_shared_input


class BatchPredictor:
    """Callable class for ``Dataset.map_batches``: one model per actor. Rows whose ``error`` is set
    (unreadable inputs) pass through with zero scores."""

    def __init__(self, model_path: str, meta: CheckpointMeta, tta: bool = False):
        # Checkpoints run PyTorch here: evaluation and batch prediction score what was trained, and write
        # nothing next to the checkpoint (Serve's CPU replicas use its cached ONNX export instead). ``meta``
        # is the one the driver read: no actor parses it again.
        self.model = LoadedModel.open(model_path, "onnx" if is_onnx_file(model_path) else "torch", tta, meta=meta)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        images = batch["image"]
        ok = np.array([not e for e in batch["error"]]) if "error" in batch else np.ones(len(images), bool)
        probs = np.zeros((len(images), len(self.model.class_names)), np.float32)
        if ok.any():
            probs[ok] = self.model.probs(images[ok])
        out = {key: value for key, value in batch.items() if key != "image"}
        out["probs"] = probs
        return out


IN_DRIVER_MAX_ROWS = 5_000  # CPU-only jobs this small score in the driver: an actor pool costs a process start each


def scored_batches(dataset: ray.data.Dataset, model_path: str, meta: CheckpointMeta, num_rows: int,
                   tta: bool = False, batch_size: int = 64) -> Iterator[dict[str, Any]]:
    """Every batch of a decoded dataset with ``probs`` attached (float32, rows x classes; rows whose ``error``
    is set get zeros). ``meta``: the model's (:func:`cars_ray.inference.model.describe`).

    Decoding always runs as Ray tasks over the cluster. The model runs in an actor pool (one actor per
    GPU, or up to two on CPUs) for GPU clusters and large jobs; a small CPU-only job runs it here, in
    the driver, while the tasks decode: the same BatchPredictor, without starting and loading actors.
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if not is_onnx_file(model_path) else 0
    if not gpus and num_rows <= IN_DRIVER_MAX_ROWS:
        predictor = BatchPredictor(model_path, meta, tta)
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield predictor(batch)
        return
    actors = max(1, gpus if gpus else min(2, int(resources.get("CPU", 1))))
    model_file = model_path if is_onnx_file(model_path) else os.path.join(model_path, MODEL_FILE)
    check_shared_input(model_file, "the checkpoint file")  # the actors may load it on any node
    scored = dataset.map_batches(
        BatchPredictor, fn_constructor_kwargs={"model_path": model_path, "meta": meta, "tta": tta},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
    )
    yield from scored.iter_batches(batch_size=None, batch_format="numpy")
