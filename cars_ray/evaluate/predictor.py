"""Running a trained model: a checkpoint directory (PyTorch) or an exported ``.onnx`` file.

The same backends serve Ray Data batch prediction (an actor pool) and the Ray Serve replicas.
Inputs are uint8 (B, resize, resize, 3) batches, as ``cars_ray.data.images.load_array`` makes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch

from cars_ray.data.augment import EvalTransform
from cars_ray.train.checkpoint import load_model


def predict_scores(model: torch.nn.Module, transform: EvalTransform, images: torch.Tensor, tta: bool) -> torch.Tensor:
    """Softmax probabilities for a uint8 (B, H, W, 3) batch; TTA averages with the mirror image."""
    x = transform(images)
    probs = model(x).float().softmax(dim=1)
    if tta:
        probs = (probs + model(x.flip(-1)).float().softmax(dim=1)) / 2
    return probs


class TorchBackend:
    """A checkpoint's model on its GPU when there is one (bf16 autocast there), else the CPU in fp32."""

    def __init__(self, checkpoint_dir: str, tta: bool = False):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, meta = load_model(checkpoint_dir, self.device)
        self.class_names, self.preprocessing = meta["class_names"], meta["preprocessing"]
        self.name = f"{meta['model']['backbone']} + {meta['model']['head']} head"
        self.transform = EvalTransform(self.preprocessing).to(self.device)
        self.tta = tta

    @torch.inference_mode()
    def probs(self, images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return predict_scores(self.model, self.transform, batch, self.tta).cpu().numpy().astype(np.float32)


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
        logits = self.classifier.logits(images)
        probs = _softmax(logits)
        if self.tta:
            probs = (probs + _softmax(self.classifier.logits(images[:, :, ::-1]))) / 2
        return probs.astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def load_backend(path: str, tta: bool = False) -> TorchBackend | OnnxBackend:
    return OnnxBackend(path, tta) if str(path).endswith(".onnx") else TorchBackend(path, tta)


def backend_info(path: str) -> tuple[list[str], dict[str, Any]]:
    """(class names, preprocessing) of a checkpoint or .onnx file, without building the model."""
    if str(path).endswith(".onnx"):
        backend = OnnxBackend(path)
        return backend.class_names, backend.preprocessing
    from cars_ray.train.checkpoint import read_meta

    meta = read_meta(path)
    return meta["class_names"], meta["preprocessing"]


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
