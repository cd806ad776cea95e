"""ONNX export of a checkpoint, with class names and preprocessing embedded, a parity check, int8.

The exported graph is the evaluation view (``Preprocessing.eval_view``: centre crop, scale,
normalise) followed by the model, so it takes the same uint8 (B, resize, resize, 3) batches as the
PyTorch path and no runtime re-implements the view.

- ``export_onnx``: a checkpoint to an fp32 ``.onnx`` file; ``check_parity`` compares it with PyTorch.
- ``cached_onnx``: the fp32 export a CPU replica serves, made once per checkpoint content (its hash)
  and kept only after the parity check held.
- ``quantize_int8``: static QDQ quantisation with ONNX Runtime's tools, calibrated on images.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from cars_ray.checkpoint import META_FILE, MODEL_FILE, load_model, preprocessing_of, read_meta
from cars_ray.errors import CheckpointError
from cars_ray.outputs import write_atomic
from cars_ray.preprocessing import Preprocessing

OPSET = 17
INPUT_NAME = "images"  # uint8 (batch, resize, resize, 3)
PARITY_TOLERANCE = 1e-3  # max |logit difference| between PyTorch and ONNX Runtime, fp32
CACHE_ENV = "CARS_RAY_CACHE_DIR"  # where exports of read-only checkpoints go (default ~/.cache/cars_ray)


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
    """An exported model run by onnxruntime on CPU, taking the same uint8 batches as the torch path.

    ``num_threads`` caps ONNX Runtime's intra-op threads (a Serve replica passes its CPUs, so replicas
    sharing a machine do not oversubscribe its cores); None lets ONNX Runtime use every core.
    """

    def __init__(self, path: str, num_threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            # Idle intra-op threads sleep instead of spinning: a capped session shares its cores (a Serve replica
            # with the proxy, the ingress and other replicas), and spinning threads took the CPU those needed
            # (2-core machine, Lite2 batch 16: 45-58 CPU ms per image spinning, 28-31 not; docs/benchmarks.md).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        self.int8 = "quantization" in props

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})[0]


@dataclass
class ParityReport:
    max_abs_logit_diff: float
    top1_agreement: float
    num_images: int
    onnx_bytes: int = 0

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


def parity_images(preprocessing: Preprocessing, paths: list[str] | None = None, num_images: int = 16) -> np.ndarray:
    """uint8 images for a parity check: ``paths``, or the demo sample shipped in the package."""
    from cars_ray.config import DEMO_ROOT
    from cars_ray.data.layouts import resolve_root
    from cars_ray.evaluate.batch_predict import expand_inputs

    return np.stack([preprocessing.decode(p) for p in expand_inputs(paths or [resolve_root(DEMO_ROOT)])[:num_images]])


def checkpoint_digest(checkpoint_dir: str) -> str:
    """A hash of the checkpoint's weights and meta.json (what an export depends on) and the export's opset."""
    digest = hashlib.sha256(f"opset{OPSET}".encode())
    for name in (MODEL_FILE, META_FILE):
        with open(os.path.join(checkpoint_dir, name), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def onnx_cache_dir(checkpoint_dir: str) -> str:
    """``CHECKPOINT/onnx`` when the checkpoint folder is writable, else ``$CARS_RAY_CACHE_DIR/onnx`` (default
    ``~/.cache/cars_ray/onnx``)."""
    if os.access(checkpoint_dir, os.W_OK):
        return os.path.join(checkpoint_dir, "onnx")
    return os.path.join(os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "cars_ray"), "onnx")


def export_checked(checkpoint_dir: str, out_path: str, images: np.ndarray,
                   tolerance: float = PARITY_TOLERANCE) -> ParityReport:
    """Export next to a temporary name, compare with PyTorch on ``images``, and give the file ``out_path``
    only when the check holds (else nothing is left behind). The report carries the export's size."""
    candidate = f"{out_path}.unchecked-{os.getpid()}.onnx"
    try:
        export_onnx(checkpoint_dir, candidate)
        report = check_parity(checkpoint_dir, candidate, images)
        report.onnx_bytes = os.path.getsize(candidate)
        if report.holds(tolerance):
            os.replace(candidate, out_path)
    finally:
        if os.path.exists(candidate):
            os.remove(candidate)
    return report


def cached_onnx(checkpoint_dir: str) -> str:
    """The checkpoint's fp32 ONNX export, made on first use and given its cached name, ``<digest>.onnx``,
    only after the check of ``pipelines/export.py`` held on the demo sample. Raises CheckpointError when not."""
    path = os.path.join(onnx_cache_dir(checkpoint_dir), f"{checkpoint_digest(checkpoint_dir)}.onnx")
    if os.path.isfile(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    images = parity_images(preprocessing_of(read_meta(checkpoint_dir), checkpoint_dir))
    report = export_checked(checkpoint_dir, path, images)
    if not report.holds(PARITY_TOLERANCE):
        raise CheckpointError(f"the ONNX export of {checkpoint_dir} does not match PyTorch (max |logit difference| "
                              f"{report.max_abs_logit_diff:.2e}, top-1 agreement {report.top1_agreement:.3f}); "
                              "serve it with backend=torch")
    return path


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
        proto.metadata_props.add(key="quantization", value=json.dumps(
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
    fp32, int8 = OnnxClassifier(fp32_path), OnnxClassifier(int8_path)
    chunks = [slice(i, i + batch_size) for i in range(0, len(images), batch_size)]
    top_fp32 = np.concatenate([fp32.logits(images[c]).argmax(1) for c in chunks])
    top_int8 = np.concatenate([int8.logits(images[c]).argmax(1) for c in chunks])
    report = Int8Report(float((top_fp32 == top_int8).mean()), len(images))
    if labels is not None:
        report.fp32_top1, report.int8_top1 = float((top_fp32 == labels).mean()), float((top_int8 == labels).mean())
    return report
