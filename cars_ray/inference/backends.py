"""The runtimes a :class:`~cars_ray.inference.model.LoadedModel` runs on: uint8 (B, resize, resize, 3) images
(as ``Preprocessing.decode`` makes them) in, float32 (B, classes) probabilities out. Both run the one
evaluation view (``Preprocessing.eval_view``), in PyTorch or inside the exported graph."""

from __future__ import annotations

import numpy as np
import torch

from cars_ray.checkpoint import CheckpointMeta
from cars_ray.inference.onnx import OnnxSession


class TorchBackend:
    """A loaded checkpoint's model on ``device`` (channels_last and the AMP dtype it trained with on CUDA,
    fp32 on CPU)."""

    kind = "torch"

    def __init__(self, model: torch.nn.Module, meta: CheckpointMeta, device: torch.device):
        self.model, self.device = model, device
        self.dtype = meta.inference.autocast_dtype(device)
        self.view = meta.preprocessing.eval_view(meta.inference.channels_last).to(device)

    @torch.inference_mode()
    def probs(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            x = self.view(batch)
            probs = self.model(x).float().softmax(dim=1)
            if tta:
                probs = (probs + self.model(x.flip(-1)).float().softmax(dim=1)) / 2
        return probs.cpu().numpy().astype(np.float32)


class OnnxBackend:
    """An exported model on ONNX Runtime (CPU): fp32, or int8 when the file was quantised."""

    def __init__(self, session: OnnxSession):
        self.session = session
        self.kind = "onnx-int8" if session.int8 else "onnx"

    def probs(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        probs = softmax(self.session.logits(images))
        if tta:
            probs = (probs + softmax(self.session.logits(images[:, :, ::-1]))) / 2
        return probs.astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
