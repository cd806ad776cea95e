"""The evaluation view as a torch module: the one implementation every runtime uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # for the annotation only: preprocessing imports this module (Preprocessing.eval_view)
    from cars_ray.preprocessing import Preprocessing


class EvalView(nn.Module):
    """uint8 (B, resize, resize, 3) -> normalised float (B, 3, image_size, image_size): the evaluation view.

    The only implementation of it: training validation, evaluation, prediction and Serve run it in
    PyTorch, and the ONNX export puts this same module into the graph in front of the model.
    """

    def __init__(self, preprocessing: Preprocessing, channels_last: bool = False):
        super().__init__()
        self.image_size = preprocessing.image_size
        self.channels_last = channels_last
        # Folded: (x / 255 - mean) / std == x * scale + shift
        std = torch.tensor(preprocessing.std, dtype=torch.float32)
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-torch.tensor(preprocessing.mean) / std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[1], images.shape[2]
        top, left = (height - self.image_size) // 2, (width - self.image_size) // 2
        crop = images[:, top:top + self.image_size, left:left + self.image_size]
        x = crop.permute(0, 3, 1, 2).float() * self.scale + self.shift
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
