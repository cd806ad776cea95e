"""The fp32 ONNX graph of a checkpoint and the ONNX Runtime session that runs it.

The exported graph is the evaluation view (``Preprocessing.eval_view``: centre crop, scale, normalise)
followed by the model, so it takes the same uint8 (B, resize, resize, 3) batches as the PyTorch path and
no runtime re-implements the view. The checkpoint's metadata (class names, preprocessing, model config)
is embedded, so an ``.onnx`` file is a model on its own.

- :func:`export_checked`: write an export and keep it only when ONNX Runtime matches PyTorch;
- :func:`cached_onnx`: the export a CPU replica serves, made once per checkpoint content (its hash);
- :class:`OnnxSession`: an ``.onnx`` file on ONNX Runtime (CPU), its metadata checked once.

int8 quantisation, which writes new files from these, lives in :mod:`cars_ray.export`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from cars_ray.checkpoint import META_FILE, MODEL_FILE, CheckpointMeta, load_model
from cars_ray.errors import CheckpointError
from cars_ray.outputs import write_atomic
from cars_ray.preprocessing import Preprocessing

ONNX_SUFFIX = ".onnx"
OPSET = 17
INPUT_NAME = "images"  # uint8 (batch, resize, resize, 3)
META_KEYS = ("class_names", "preprocessing", "model")  # the checkpoint's metadata, one JSON value per key
OPTIONAL_META_KEYS = ("inference",)  # absent from files older cars_ray versions wrote
INT8_KEY = "quantization"  # present in files cars_ray.export.quantize_int8 wrote
PARITY_TOLERANCE = 1e-3  # max |logit difference| between PyTorch and ONNX Runtime, fp32
CACHE_ENV = "CARS_RAY_CACHE_DIR"  # where exports of read-only checkpoints go (default ~/.cache/cars_ray)


def is_onnx_file(path: str | os.PathLike) -> bool:
    """Whether a model path names an exported ONNX file (by its ``.onnx`` suffix, any case) rather than a
    checkpoint directory: the one place this is decided."""
    return str(path).lower().endswith(ONNX_SUFFIX) and not os.path.isdir(path)


class ViewedClassifier(torch.nn.Module):
    """The evaluation view and the model in one module: uint8 NHWC images in, logits out."""

    def __init__(self, model: torch.nn.Module, preprocessing: Preprocessing):
        super().__init__()
        self.view = preprocessing.eval_view()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.view(images))


def export_onnx(model: torch.nn.Module, meta: CheckpointMeta, out_path: str, source_checkpoint: str) -> None:
    """Write the graph of ``model`` (a loaded checkpoint, eval mode, CPU; left in contiguous memory format) with
    ``meta`` embedded to ``out_path``, atomically."""
    import onnx

    wrapped = ViewedClassifier(model.to(memory_format=torch.contiguous_format), meta.preprocessing).eval()
    size = meta.preprocessing.resize
    dummy = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    values = meta.to_dict()
    metadata = {key: json.dumps(values[key]) for key in META_KEYS + OPTIONAL_META_KEYS}
    metadata["source_checkpoint"] = os.path.abspath(source_checkpoint)

    def write(tmp: str) -> None:
        torch.onnx.export(wrapped, (dummy,), tmp, input_names=[INPUT_NAME], output_names=["logits"],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
        proto = onnx.load(tmp)
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)

    write_atomic(out_path, write)


class OnnxSession:
    """An exported model on ONNX Runtime (CPU), taking the same uint8 batches as the PyTorch path.

    ``num_threads`` caps ONNX Runtime's intra-op threads (a Serve replica passes its CPUs, so replicas
    sharing a machine do not oversubscribe its cores); None lets ONNX Runtime use every core. ``meta``:
    the metadata already known (the checkpoint a cached export was made from), else the file's own is read.
    Raises CheckpointError in one sentence for a file that is not a cars_ray ONNX model.
    """

    def __init__(self, path: str, num_threads: int | None = None, meta: CheckpointMeta | None = None):
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
        if self.session.get_inputs()[0].name != INPUT_NAME:
            raise CheckpointError(f"{path} takes {self.session.get_inputs()[0].name!r}, not uint8 {INPUT_NAME!r}: "
                                  "it was exported by an older cars_ray; export it again with pipelines/export.py")
        self.meta = meta or read_onnx_meta(props, path)
        self.int8 = INT8_KEY in props

    def logits(self, images: np.ndarray) -> np.ndarray:
        """float32 (B, classes) logits of uint8 (B, resize, resize, 3) images."""
        return self.session.run(["logits"], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})[0]


def read_onnx_meta(props: dict[str, str], path: str) -> CheckpointMeta:
    """The checkpoint metadata :func:`export_onnx` embedded (ONNX metadata properties), checked."""
    missing = [key for key in META_KEYS if key not in props]
    if missing:
        raise CheckpointError(f"{path} lacks cars_ray metadata ({', '.join(missing)}); export it with pipelines/export.py")
    try:
        raw = {key: json.loads(props[key]) for key in META_KEYS + OPTIONAL_META_KEYS if key in props}
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its cars_ray metadata is not readable JSON ({err})") from None
    return CheckpointMeta.from_dict(raw, path)


def is_int8_onnx(path: str) -> bool:
    """An .onnx file written by ``cars_ray.export.quantize_int8`` (its metadata says so)."""
    if not is_onnx_file(path) or not os.path.isfile(path):
        return False
    import onnx

    return any(p.key == INT8_KEY for p in onnx.load(path, load_external_data=False).metadata_props)


@dataclass
class ParityReport:
    max_abs_logit_diff: float
    top1_agreement: float
    num_images: int
    onnx_bytes: int = 0

    def holds(self, tolerance: float) -> bool:
        return self.max_abs_logit_diff <= tolerance and self.top1_agreement == 1.0


def check_parity(model: torch.nn.Module, meta: CheckpointMeta, onnx_path: str, images: np.ndarray) -> ParityReport:
    """Compare PyTorch (the loaded checkpoint, fp32, CPU) and ONNX Runtime logits on uint8 ``images``."""
    with torch.no_grad():
        torch_logits = ViewedClassifier(model, meta.preprocessing)(torch.from_numpy(images)).numpy()
    onnx_logits = OnnxSession(onnx_path, meta=meta).logits(images)
    return ParityReport(float(np.abs(torch_logits - onnx_logits).max()),
                        float((torch_logits.argmax(1) == onnx_logits.argmax(1)).mean()), len(images))


def parity_images(preprocessing: Preprocessing, paths: list[str] | None = None, num_images: int = 16) -> np.ndarray:
    """uint8 (N, resize, resize, 3) images for a parity check: the first ``num_images`` of ``paths`` (image
    files), or of the demo sample shipped in the package."""
    if not paths:
        from cars_ray.config import DEMO_ROOT
        from cars_ray.data.layouts import read_dataset

        paths = read_dataset(DEMO_ROOT, "auto").table.path.tolist()
    return np.stack([preprocessing.decode(p) for p in paths[:num_images]])


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


def export_checked(checkpoint_dir: str, out_path: str, images: np.ndarray, tolerance: float = PARITY_TOLERANCE,
                   meta: CheckpointMeta | None = None) -> ParityReport:
    """Export next to a temporary name, compare with PyTorch on ``images``, and give the file ``out_path``
    only when the check holds (else nothing is left behind). The checkpoint is loaded once, its meta.json
    read once (not at all when ``meta`` is given). The report carries the export's size."""
    model, meta = load_model(checkpoint_dir, "cpu", meta)
    candidate = f"{out_path}.unchecked-{os.getpid()}{ONNX_SUFFIX}"
    try:
        export_onnx(model, meta, candidate, checkpoint_dir)
        report = check_parity(model, meta, candidate, images)
        report.onnx_bytes = os.path.getsize(candidate)
        if report.holds(tolerance):
            os.replace(candidate, out_path)
    finally:
        if os.path.exists(candidate):
            os.remove(candidate)
    return report


def cached_onnx(checkpoint_dir: str, meta: CheckpointMeta) -> str:
    """The path of the checkpoint's fp32 ONNX export, made on first use and given its cached name,
    ``<digest>.onnx``, only after the check of ``pipelines/export.py`` held on the demo sample
    (``meta``: the checkpoint's, read by the caller). Raises CheckpointError when it does not hold."""
    path = os.path.join(onnx_cache_dir(checkpoint_dir), f"{checkpoint_digest(checkpoint_dir)}{ONNX_SUFFIX}")
    if os.path.isfile(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    report = export_checked(checkpoint_dir, path, parity_images(meta.preprocessing), meta=meta)
    if not report.holds(PARITY_TOLERANCE):
        raise CheckpointError(f"the ONNX export of {checkpoint_dir} does not match PyTorch (max |logit difference| "
                              f"{report.max_abs_logit_diff:.2e}, top-1 agreement {report.top1_agreement:.3f}); "
                              "serve it with backend=torch")
    return path
