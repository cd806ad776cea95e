"""ONNX export of a checkpoint, with class names and preprocessing embedded, and a parity check.

The exported graph is the evaluation view (``Preprocessing.eval_view``: centre crop, scale,
normalise) followed by the model, so it takes the same uint8 (B, resize, resize, 3) batches as the
PyTorch path and no runtime re-implements the view.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cars_ray.checkpoint import load_model, preprocessing_of
from cars_ray.errors import CheckpointError
from cars_ray.outputs import write_atomic
from cars_ray.preprocessing import Preprocessing

OPSET = 17
INPUT_NAME = "images"  # uint8 (batch, resize, resize, 3)


class ViewedClassifier(torch.nn.Module):
    """The evaluation view and the model in one module: uint8 NHWC images in, logits out."""

    def __init__(self, model: torch.nn.Module, preprocessing: Preprocessing):
        super().__init__()
        self.view = preprocessing.eval_view()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.view(images))


def export_onnx(checkpoint_dir: str, out_path: str) -> dict[str, Any]:
    """Write ``out_path`` (atomically); returns the metadata embedded in it."""
    import onnx

    model, meta = load_model(checkpoint_dir)
    preprocessing = preprocessing_of(meta, checkpoint_dir)
    wrapped = ViewedClassifier(model.to(memory_format=torch.contiguous_format), preprocessing).eval()
    dummy = torch.randint(0, 256, (2, preprocessing.resize, preprocessing.resize, 3), dtype=torch.uint8)
    metadata = {
        "class_names": json.dumps(meta["class_names"]),
        "preprocessing": json.dumps(preprocessing.to_dict()),
        "model": json.dumps(meta["model"]),
        "source_checkpoint": os.path.abspath(checkpoint_dir),
    }

    def write(tmp: str) -> None:
        torch.onnx.export(wrapped, (dummy,), tmp, input_names=[INPUT_NAME], output_names=["logits"],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
        proto = onnx.load(tmp)
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)

    write_atomic(out_path, write)
    return metadata


class OnnxClassifier:
    """An exported model run by onnxruntime on CPU, taking the same uint8 batches as the torch path."""

    def __init__(self, path: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own assorted types for unreadable files
            raise CheckpointError(f"{path} is not a readable ONNX model ({type(err).__name__})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "class_names" not in props or "preprocessing" not in props:
            raise CheckpointError(f"{path} lacks cars_ray metadata (class_names, preprocessing); export it with pipelines/export.py")
        if self.session.get_inputs()[0].name != INPUT_NAME:
            raise CheckpointError(f"{path} takes {self.session.get_inputs()[0].name!r}, not uint8 {INPUT_NAME!r}: "
                                  "it was exported by an older cars_ray; export it again with pipelines/export.py")
        self.class_names = json.loads(props["class_names"])
        self.preprocessing = Preprocessing.from_dict(json.loads(props["preprocessing"]), path)
        self.model_config = json.loads(props.get("model", "{}"))

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})[0]


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
        torch_logits = ViewedClassifier(model, preprocessing_of(meta, checkpoint_dir))(torch.from_numpy(images)).numpy()
    onnx_logits = OnnxClassifier(onnx_path).logits(images)
    return ParityReport(float(np.abs(torch_logits - onnx_logits).max()),
                        float((torch_logits.argmax(1) == onnx_logits.argmax(1)).mean()), len(images))
