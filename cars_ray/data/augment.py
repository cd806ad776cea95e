"""Batched augmentation on the training worker's device (GPU when present, else CPU).

Ray Data decodes each image once into a compact uint8 cache (``resize`` x ``resize`` pixels);
these modules turn a cached batch (B, H, W, 3 uint8) into normalised model input, with each
sample drawing its own random parameters, so the GPU never waits on per-image CPU work.

Levels: ``none`` (evaluation view), ``light`` (random resized crop + flip), ``standard``
(+ colour jitter), ``strong`` (+ a RandAugment policy from torchvision).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchvision.ops import roi_align
from torchvision.transforms import v2

AUGMENT_LEVELS = ("none", "light", "standard", "strong")


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class EvalTransform(nn.Module):
    """Centre ``image_size`` crop of the cached square, then normalise: the evaluation view."""

    def __init__(self, preprocessing: dict[str, Any]):
        super().__init__()
        self.image_size = int(preprocessing["image_size"])
        self.normalize = Normalize(preprocessing["mean"], preprocessing["std"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float_nchw(images)
        height, width = x.shape[-2:]
        top, left = (height - self.image_size) // 2, (width - self.image_size) // 2
        return self.normalize(x[..., top:top + self.image_size, left:left + self.image_size])


class TrainAugment(nn.Module):
    """Per-sample random resized crop, flip, colour jitter and RandAugment, batched."""

    def __init__(self, preprocessing: dict[str, Any], level: str = "standard", scale_min: float = 0.25,
                 hflip: float = 0.5, color_jitter: float = 0.2, randaugment_ops: int = 2,
                 randaugment_magnitude: int = 9):
        super().__init__()
        if level not in AUGMENT_LEVELS:
            raise ValueError(f"augment level must be one of {AUGMENT_LEVELS}, got {level!r}")
        self.level = level
        self.image_size = int(preprocessing["image_size"])
        self.scale = (scale_min, 1.0)
        self.log_ratio = (math.log(3 / 4), math.log(4 / 3))
        self.hflip = hflip
        self.color_jitter = color_jitter if level in ("standard", "strong") else 0.0
        self.randaugment = (v2.RandAugment(randaugment_ops, randaugment_magnitude)
                            if level == "strong" and randaugment_ops > 0 else None)
        self.eval_view = EvalTransform(preprocessing)
        self.normalize = Normalize(preprocessing["mean"], preprocessing["std"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.level == "none":
            return self.eval_view(images)
        x = self.random_resized_crop(to_float_nchw(images))
        x = self.random_flip(x)
        if self.randaugment is not None:
            x = torch.stack([self.randaugment(sample) for sample in x])  # each sample its own ops
        if self.color_jitter > 0:
            x = self.jitter(x)
        return self.normalize(x)

    def random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        """One box per sample (area fraction and aspect ratio drawn as torchvision does), resampled by roi_align."""
        batch, _, height, width = x.shape
        device = x.device
        area = torch.empty(batch, device=device).uniform_(*self.scale) * height * width
        ratio = torch.exp(torch.empty(batch, device=device).uniform_(*self.log_ratio))
        box_w = torch.sqrt(area * ratio).clamp(max=width)
        box_h = torch.sqrt(area / ratio).clamp(max=height)
        x0 = torch.rand(batch, device=device) * (width - box_w)
        y0 = torch.rand(batch, device=device) * (height - box_h)
        boxes = torch.stack([torch.arange(batch, device=device, dtype=x.dtype), x0, y0, x0 + box_w, y0 + box_h], 1)
        return roi_align(x, boxes, output_size=self.image_size, spatial_scale=1.0, sampling_ratio=2, aligned=True)

    def random_flip(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.hflip
        return torch.where(flip, x.flip(-1), x)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast and saturation factors drawn per sample from [1-j, 1+j]."""
        batch = x.shape[0]

        def factor() -> torch.Tensor:
            return torch.empty(batch, 1, 1, 1, device=x.device).uniform_(1 - self.color_jitter, 1 + self.color_jitter)

        x = x * factor()
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray.mean(dim=(2, 3), keepdim=True)) * factor() + gray.mean(dim=(2, 3), keepdim=True)
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray) * factor() + gray
        return x.clamp_(0.0, 1.0)


def create_train_augment(data_cfg, preprocessing: dict[str, Any]) -> TrainAugment:
    """The training augmentation a :class:`~cars_ray.config.DataConfig` asks for."""
    return TrainAugment(preprocessing, data_cfg.augment, data_cfg.rrc_scale_min, data_cfg.hflip,
                        data_cfg.color_jitter, data_cfg.randaugment_ops, data_cfg.randaugment_magnitude)
