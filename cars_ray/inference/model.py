"""A model to run, resolved once from a checkpoint directory or an exported ``.onnx`` file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cars_ray.config import BACKENDS
from cars_ray.checkpoint import CheckpointMeta, InferenceSettings, check_checkpoint, load_model, read_meta
from cars_ray.inference.backends import OnnxBackend, TorchBackend
from cars_ray.inference.onnx import OnnxSession, cached_onnx, is_int8_onnx, is_onnx_file
from cars_ray.preprocessing import Preprocessing

def choose_backend(path: str, requested: str = "auto", has_gpu: bool | None = None) -> str:
    """``torch`` or ``onnx`` for a model path: an ``.onnx`` file (fp32 or int8) runs on ONNX Runtime; a
    checkpoint runs PyTorch where there is a GPU (``has_gpu``; default: this process sees one) and ONNX
    Runtime (its cached, parity-checked export) on CPU, unless ``requested`` names one. Raises ValueError
    in one sentence for a backend the model cannot run on."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    onnx_file = is_onnx_file(path)
    if requested == "onnx-int8" and not is_int8_onnx(path):
        raise ValueError(f"backend=onnx-int8 needs an int8 .onnx file; make one from {path} with "
                         "pipelines/export.py --int8 --calibration-dir DIR and serve that file")
    if onnx_file:
        if requested == "torch":
            raise ValueError(f"backend=torch needs a checkpoint directory; {path} is an ONNX file")
        return "onnx"
    if requested != "auto":
        return requested
    return "torch" if (torch.cuda.is_available() if has_gpu is None else has_gpu) else "onnx"


def describe(path: str) -> CheckpointMeta:
    """The metadata of a checkpoint directory or ``.onnx`` file (class names, preprocessing, model config),
    checked, without building the PyTorch model. Raises CheckpointError in one sentence."""
    return OnnxSession(path).meta if is_onnx_file(path) else read_meta(path)


def check_model(path: str) -> CheckpointMeta:
    """Open a user-given checkpoint or ``.onnx`` file on the driver before Ray starts, as the workers will
    (a checkpoint's model.pt loaded into the model its meta.json describes; an ONNX file opened by ONNX
    Runtime), so a bad one fails here in one sentence (CheckpointError). Returns its metadata."""
    return describe(path) if is_onnx_file(path) else check_checkpoint(path)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: what ``path`` is (``source``: checkpoint or onnx), its checked metadata (class
    names, the typed Preprocessing, inference settings) and the backend it runs on.

    Build it with :meth:`open`; ``probs`` takes uint8 (B, resize, resize, 3) arrays and returns float32
    (B, classes) probabilities (``tta``: averaged with the horizontally flipped image)."""

    path: str
    source: Literal["checkpoint", "onnx"]
    meta: CheckpointMeta
    backend: TorchBackend | OnnxBackend
    tta: bool = False

    @classmethod
    def open(cls, path: str, backend: str = "auto", tta: bool = False, num_threads: int | None = None,
             meta: CheckpointMeta | None = None) -> "LoadedModel":
        """Resolve ``path`` once: its metadata read and parsed once (not at all when ``meta`` is given), the
        backend :func:`choose_backend` picks (a checkpoint on ONNX Runtime runs its cached, parity-checked
        export), ``num_threads``: ONNX Runtime's thread cap. Raises CheckpointError / ValueError in one sentence."""
        chosen = choose_backend(path, backend)
        if is_onnx_file(path):
            session = OnnxSession(path, num_threads, meta)
            return cls(path, "onnx", session.meta, OnnxBackend(session), tta)
        meta = meta or read_meta(path)
        if chosen == "torch":
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            model, _ = load_model(path, device, meta)
            return cls(path, "checkpoint", meta, TorchBackend(model, meta, device), tta)
        return cls(path, "checkpoint", meta, OnnxBackend(OnnxSession(cached_onnx(path, meta), num_threads, meta)), tta)

    @property
    def kind(self) -> str:
        """The backend it runs on: ``torch``, ``onnx`` or ``onnx-int8``."""
        return self.backend.kind

    @property
    def class_names(self) -> list[str]:
        return self.meta.class_names

    @property
    def preprocessing(self) -> Preprocessing:
        return self.meta.preprocessing

    @property
    def inference(self) -> InferenceSettings:
        return self.meta.inference

    @property
    def name(self) -> str:
        """``backbone + head head``, with the ONNX kind when ONNX Runtime runs it (``(onnx)``, ``(onnx-int8)``)."""
        return self.meta.name if self.kind == "torch" else f"{self.meta.name} ({self.kind})"

    def probs(self, images: np.ndarray) -> np.ndarray:
        return self.backend.probs(images, self.tta)
