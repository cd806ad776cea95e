"""Running a trained model: a checkpoint directory (PyTorch) or an exported ``.onnx`` file.

The same backends serve Ray Data batch prediction (an actor pool), evaluation and the Ray Serve
replicas. Inputs are uint8 (B, resize, resize, 3) batches, as ``Preprocessing.decode`` makes them;
both backends run the one evaluation view (``Preprocessing.eval_view``), in PyTorch or inside the
exported graph.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import ray
import torch

from cars_ray.checkpoint import MODEL_FILE, inference_settings, load_model, preprocessing_of, read_meta
from cars_ray.preprocessing import Preprocessing
from cars_ray.storage import check_shared_input


class TorchBackend:
    """A checkpoint's model on its GPU when there is one (channels_last, the AMP dtype it trained with),
    else on the CPU in fp32."""

    def __init__(self, checkpoint_dir: str, tta: bool = False):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model, meta = load_model(checkpoint_dir, self.device)
        self.class_names, self.preprocessing = meta["class_names"], preprocessing_of(meta, checkpoint_dir)
        self.dtype, channels_last = inference_settings(meta, self.device)
        self.view = self.preprocessing.eval_view(channels_last).to(self.device)
        self.name = f"{meta['model']['backbone']} + {meta['model']['head']} head"
        self.kind = "torch"
        self.tta = tta

    @torch.inference_mode()
    def probs(self, images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            x = self.view(batch)
            probs = self.model(x).float().softmax(dim=1)
            if self.tta:
                probs = (probs + self.model(x.flip(-1)).float().softmax(dim=1)) / 2
        return probs.cpu().numpy().astype(np.float32)


class OnnxBackend:
    """An exported model on onnxruntime (CPU), with at most ``num_threads`` intra-op threads."""

    def __init__(self, path: str, tta: bool = False, num_threads: int | None = None):
        from cars_ray.export import OnnxClassifier

        self.classifier = OnnxClassifier(path, num_threads)
        self.class_names, self.preprocessing = self.classifier.class_names, self.classifier.preprocessing
        model = self.classifier.model_config
        self.kind = "onnx-int8" if self.classifier.int8 else "onnx"
        self.name = f"{model.get('backbone', 'model')} + {model.get('head', '?')} head ({self.kind})"
        self.tta = tta

    def probs(self, images: np.ndarray) -> np.ndarray:
        probs = _softmax(self.classifier.logits(images))
        if self.tta:
            probs = (probs + _softmax(self.classifier.logits(images[:, :, ::-1]))) / 2
        return probs.astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def choose_backend(path: str, requested: str = "auto") -> str:
    """``torch`` or ``onnx`` for a model path: an ``.onnx`` file (fp32 or int8) runs on ONNX Runtime; a
    checkpoint runs PyTorch where there is a GPU and ONNX Runtime (its cached, parity-checked export) on CPU,
    unless ``requested`` names one."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested == "onnx-int8" and not is_int8_onnx(path):
        raise ValueError(f"backend=onnx-int8 needs an int8 .onnx file; make one from {path} with "
                         "pipelines/export.py --int8 --calibration-dir DIR and serve that file")
    if str(path).endswith(".onnx"):
        if requested == "torch":
            raise ValueError(f"backend=torch needs a checkpoint directory; {path} is an ONNX file")
        return "onnx"
    if requested != "auto":
        return requested
    return "torch" if torch.cuda.is_available() else "onnx"


def is_int8_onnx(path: str) -> bool:
    """An .onnx file written by ``quantize_int8`` (its metadata says so)."""
    if not str(path).endswith(".onnx") or not os.path.isfile(path):
        return False
    import onnx

    return any(p.key == "quantization" for p in onnx.load(path, load_external_data=False).metadata_props)


def load_backend(path: str, tta: bool = False, backend: str = "auto",
                 num_threads: int | None = None) -> TorchBackend | OnnxBackend:
    """The model at ``path`` on the backend ``choose_backend`` picks (``num_threads``: ONNX Runtime's cap)."""
    if choose_backend(path, backend) == "torch":
        return TorchBackend(path, tta)
    if str(path).endswith(".onnx"):
        return OnnxBackend(path, tta, num_threads)
    from cars_ray.export import cached_onnx

    return OnnxBackend(cached_onnx(path), tta, num_threads)


def backend_info(path: str) -> tuple[list[str], Preprocessing]:
    """(class names, preprocessing) of a checkpoint or .onnx file, without building the model."""
    if str(path).endswith(".onnx"):
        backend = OnnxBackend(path)
        return backend.class_names, backend.preprocessing
    meta = read_meta(path)
    return meta["class_names"], preprocessing_of(meta, path)


class BatchPredictor:
    """Callable class for ``Dataset.map_batches``: one model per actor. Rows whose ``error`` is set
    (unreadable inputs) pass through with zero scores."""

    def __init__(self, model_path: str, tta: bool = False):
        # Checkpoints run PyTorch here: evaluation and batch prediction score what was trained, and write
        # nothing next to the checkpoint (Serve's CPU replicas use its cached ONNX export instead).
        self.backend = load_backend(model_path, tta, "onnx" if str(model_path).endswith(".onnx") else "torch")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        images = batch["image"]
        ok = np.array([not e for e in batch["error"]]) if "error" in batch else np.ones(len(images), bool)
        probs = np.zeros((len(images), len(self.backend.class_names)), np.float32)
        if ok.any():
            probs[ok] = self.backend.probs(images[ok])
        out = {key: value for key, value in batch.items() if key != "image"}
        out["probs"] = probs
        return out


IN_DRIVER_MAX_ROWS = 5_000  # CPU-only jobs this small score in the driver: an actor pool costs a process start each


def scored_batches(dataset: ray.data.Dataset, model_path: str, num_rows: int, tta: bool = False,
                   batch_size: int = 64) -> Iterator[dict[str, Any]]:
    """Every batch of a decoded dataset with ``probs`` attached (rows whose ``error`` is set get zeros).

    Decoding always runs as Ray tasks over the cluster. The model runs in an actor pool (one actor per
    GPU, or up to two on CPUs) for GPU clusters and large jobs; a small CPU-only job runs it here, in
    the driver, while the tasks decode: the same BatchPredictor, without starting and loading actors.
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if not str(model_path).endswith(".onnx") else 0
    if not gpus and num_rows <= IN_DRIVER_MAX_ROWS:
        predictor = BatchPredictor(model_path, tta)
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield predictor(batch)
        return
    actors = max(1, gpus if gpus else min(2, int(resources.get("CPU", 1))))
    model_file = model_path if str(model_path).endswith(".onnx") else os.path.join(model_path, MODEL_FILE)
    check_shared_input(model_file, "the checkpoint file")  # the actors may load it on any node
    scored = dataset.map_batches(
        BatchPredictor, fn_constructor_kwargs={"model_path": model_path, "tta": tta},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
    )
    yield from scored.iter_batches(batch_size=None, batch_format="numpy")
