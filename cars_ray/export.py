"""int8 exports: static QDQ quantisation of a checkpoint's fp32 ONNX export, and its comparison with fp32.

The fp32 export itself (the evaluation view and the model in one graph, its parity check with PyTorch, the
cache CPU replicas serve) is :mod:`cars_ray.inference.onnx`: serving a checkpoint on CPU needs it, and
inference depends on nothing above it.

- ``quantize_int8``: static QDQ quantisation with ONNX Runtime's tools, calibrated on images;
- ``compare_int8``: fp32 against int8 top-1 on the same images.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from cars_ray.inference.onnx import INPUT_NAME, INT8_KEY, OnnxSession
from cars_ray.outputs import write_atomic


def quantize_int8(fp32_path: str, out_path: str, calibration: np.ndarray, batch_size: int = 16) -> None:
    """Static 8-bit quantisation (QDQ, per-channel weights, min-max activation ranges over ``calibration``,
    uint8 images) with ONNX Runtime's tools; writes ``out_path`` atomically with the fp32 file's metadata."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = (calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.uint8)}

    source = onnx.load(fp32_path)

    def write(tmp: str) -> None:
        # ONNX Runtime's recommended pre-processing first (shape inference, graph optimisation: batch norms
        # folded into the convolutions). Then convolutions and matrix products are quantised, except the
        # first convolution: on the CPU parity checkpoint (Lite0, 196 classes, 788 val images, fp32 54.6%)
        # keeping it fp32 raised int8's top-1 from 36.5% to 49.1%. Weights are uint8 (u8u8): ONNX Runtime's
        # u8s8 kernels can saturate on AVX2 CPUs without VNNI (its documentation says so), and u8u8 raised
        # top-1 further to 53.8%.
        # The view in front (cast, scale, normalise) stays fp32.
        prepared = f"{tmp}.prepared.onnx"
        try:
            quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
            first_conv = next(n.name for n in onnx.load(prepared).graph.node if n.op_type == "Conv")
            quantize_static(prepared, tmp, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                            op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=[first_conv])
        finally:
            if os.path.exists(prepared):
                os.remove(prepared)
        proto = onnx.load(tmp)
        del proto.metadata_props[:]
        for entry in source.metadata_props:
            proto.metadata_props.add(key=entry.key, value=entry.value)
        proto.metadata_props.add(key=INT8_KEY, value=json.dumps(
            {"format": "QDQ", "calibration_images": int(len(calibration)), "weights": "per-channel uint8",
             "activations": "uint8, min-max", "kept_fp32": "the evaluation view and the first convolution"}))
        onnx.save(proto, tmp)

    write_atomic(out_path, write)


@dataclass
class Int8Report:
    """fp32 against int8 on the same images: top-1 agreement, and each one's top-1 when labels are known."""

    agreement: float
    num_images: int
    fp32_top1: float | None = None
    int8_top1: float | None = None

    @property
    def drop_points(self) -> float:
        """Points of top-1 lost: against the labels when known, else the share of changed answers."""
        if self.fp32_top1 is not None and self.int8_top1 is not None:
            return 100 * (self.fp32_top1 - self.int8_top1)
        return 100 * (1 - self.agreement)


def compare_int8(fp32_path: str, int8_path: str, images: np.ndarray, labels: np.ndarray | None = None,
                 batch_size: int = 64) -> Int8Report:
    fp32, int8 = OnnxSession(fp32_path), OnnxSession(int8_path)
    chunks = [slice(i, i + batch_size) for i in range(0, len(images), batch_size)]
    top_fp32 = np.concatenate([fp32.logits(images[c]).argmax(1) for c in chunks])
    top_int8 = np.concatenate([int8.logits(images[c]).argmax(1) for c in chunks])
    report = Int8Report(float((top_fp32 == top_int8).mean()), len(images))
    if labels is not None:
        report.fp32_top1, report.int8_top1 = float((top_fp32 == labels).mean()), float((top_int8 == labels).mean())
    return report
