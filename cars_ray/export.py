"""ONNX export of a checkpoint, with class names and preprocessing embedded, and a parity check."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cars_ray.data.augment import EvalTransform
from cars_ray.errors import CheckpointError
from cars_ray.train.checkpoint import load_model

OPSET = 17


class NormalizedClassifier(torch.nn.Module):
    """The model plus its input normalisation: the exported graph takes float RGB in [0, 1], NCHW."""

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)


def export_onnx(checkpoint_dir: str, out_path: str) -> dict[str, Any]:
    """Write ``out_path`` (atomically); returns the metadata embedded in it."""
    import onnx

    model, meta = load_model(checkpoint_dir)
    pre = meta["preprocessing"]
    wrapped = NormalizedClassifier(model, pre["mean"], pre["std"]).eval()
    dummy = torch.rand(2, 3, pre["image_size"], pre["image_size"])
    tmp = f"{out_path}.tmp-{os.getpid()}"
    try:
        torch.onnx.export(wrapped, (dummy,), tmp, input_names=["pixels"], output_names=["logits"],
                          dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
        proto = onnx.load(tmp)
        metadata = {
            "class_names": json.dumps(meta["class_names"]),
            "preprocessing": json.dumps({**pre, "normalized_in_graph": True}),
            "model": json.dumps(meta["model"]),
            "source_checkpoint": os.path.abspath(checkpoint_dir),
        }
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return metadata


class OnnxClassifier:
    """An exported model run by onnxruntime on CPU, taking the same uint8 batches as the torch path."""

    def __init__(self, path: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        if "class_names" not in props or "preprocessing" not in props:
            raise CheckpointError(f"{path} lacks cars_ray metadata (class_names, preprocessing); export it with pipelines/export.py")
        self.class_names = json.loads(props["class_names"])
        self.preprocessing = json.loads(props["preprocessing"])
        self.model_config = json.loads(props.get("model", "{}"))

    def pixels(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) cache-sized images -> float (B, 3, S, S) centre crop in [0, 1]."""
        size = self.preprocessing["image_size"]
        top = (images.shape[1] - size) // 2
        left = (images.shape[2] - size) // 2
        crop = images[:, top:top + size, left:left + size]
        return np.ascontiguousarray(crop.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"pixels": self.pixels(images)})[0]


@dataclass
class ParityReport:
    max_abs_logit_diff: float
    top1_agreement: float
    num_images: int

    def holds(self, tolerance: float) -> bool:
        return self.max_abs_logit_diff <= tolerance and self.top1_agreement == 1.0


def check_parity(checkpoint_dir: str, onnx_path: str, images: np.ndarray) -> ParityReport:
    """Compare PyTorch (fp32, CPU) and onnxruntime logits on a batch of uint8 images."""
    model, meta = load_model(checkpoint_dir)
    with torch.no_grad():
        torch_logits = model(EvalTransform(meta["preprocessing"])(torch.from_numpy(images))).numpy()
    onnx_logits = OnnxClassifier(onnx_path).logits(images)
    return ParityReport(float(np.abs(torch_logits - onnx_logits).max()),
                        float((torch_logits.argmax(1) == onnx_logits.argmax(1)).mean()), len(images))
