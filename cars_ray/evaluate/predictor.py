"""Running a trained model: a checkpoint directory (PyTorch) or an exported ``.onnx`` file.

The same backends serve Ray Data batch prediction (an actor pool), evaluation and the Ray Serve
replicas. Inputs are uint8 (B, resize, resize, 3) batches, as ``Preprocessing.decode`` makes them;
both backends run the one evaluation view (``Preprocessing.eval_view``), in PyTorch or inside the
exported graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch

from cars_ray.checkpoint import inference_settings, load_model, preprocessing_of, read_meta
from cars_ray.preprocessing import Preprocessing


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
    """An exported model on onnxruntime (CPU)."""

    def __init__(self, path: str, tta: bool = False):
        from cars_ray.export import OnnxClassifier

        self.classifier = OnnxClassifier(path)
        self.class_names, self.preprocessing = self.classifier.class_names, self.classifier.preprocessing
        model = self.classifier.model_config
        self.name = f"{model.get('backbone', 'model')} + {model.get('head', '?')} head (ONNX)"
        self.tta = tta

    def probs(self, images: np.ndarray) -> np.ndarray:
        probs = _softmax(self.classifier.logits(images))
        if self.tta:
            probs = (probs + _softmax(self.classifier.logits(images[:, :, ::-1]))) / 2
        return probs.astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def load_backend(path: str, tta: bool = False) -> TorchBackend | OnnxBackend:
    return OnnxBackend(path, tta) if str(path).endswith(".onnx") else TorchBackend(path, tta)


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
        self.backend = load_backend(model_path, tta)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        images = batch["image"]
        ok = np.array([not e for e in batch["error"]]) if "error" in batch else np.ones(len(images), bool)
        probs = np.zeros((len(images), len(self.backend.class_names)), np.float32)
        if ok.any():
            probs[ok] = self.backend.probs(images[ok])
        out = {key: value for key, value in batch.items() if key != "image"}
        out["probs"] = probs
        return out


def predict_dataset(dataset: ray.data.Dataset, model_path: str, tta: bool = False, batch_size: int = 64,
                    num_actors: int | None = None) -> ray.data.Dataset:
    """Attach ``probs`` to every row of a decoded dataset, using an actor pool (GPUs when present)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if not str(model_path).endswith(".onnx") else 0
    actors = num_actors or max(1, gpus if gpus else min(2, int(resources.get("CPU", 1))))
    return dataset.map_batches(
        BatchPredictor, fn_constructor_kwargs={"model_path": model_path, "tta": tta},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
    )
