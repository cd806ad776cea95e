"""``create_model``: a timm backbone by name, its weights, a head, and the preprocessing it expects."""

from __future__ import annotations

import math
from typing import Any

import timm
import torch
from timm.models import group_parameters
from torch import nn

from cars_ray.config import ModelConfig
from cars_ray.errors import ConfigError
from cars_ray.models.heads import HEADS
from cars_ray.models.weights import load_backbone_weights


class CarClassifier(nn.Module):
    """A headless timm backbone followed by one of :data:`HEADS`."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))

    def parameter_stages(self, early_stages: int) -> dict[str, list[nn.Parameter]]:
        """Parameters split into early backbone, late backbone + head body, and classifier."""
        groups = group_parameters(self.backbone, self.backbone.group_matcher(coarse=True))
        ordered = [groups[k] for k in sorted(groups)]
        early_names = {name for group in ordered[:early_stages] for name in group}
        named = dict(self.backbone.named_parameters())
        stages: dict[str, list[nn.Parameter]] = {"early": [], "late": [], "classifier": []}
        for name, param in named.items():
            stages["early" if name in early_names else "late"].append(param)
        for name, param in self.head.named_parameters():
            stages["classifier" if name.startswith("classifier.") else "late"].append(param)
        return stages


def create_model(cfg: ModelConfig, num_classes: int, pretrained: bool = True) -> CarClassifier:
    """Build the classifier; ``pretrained=False`` skips loading weights (a checkpoint follows)."""
    if cfg.head not in HEADS:
        raise ConfigError(f"model.head is {cfg.head!r}; expected one of {', '.join(HEADS)}")
    try:
        backbone = timm.create_model(cfg.backbone, pretrained=False, num_classes=0, global_pool="",
                                     drop_path_rate=cfg.drop_path)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ConfigError(f"model.backbone {cfg.backbone!r} is not a timm model name") from None
        raise
    if pretrained:
        load_backbone_weights(backbone, cfg.backbone, cfg.weights)
    if cfg.head == "bilinear_attention":
        head = HEADS[cfg.head](backbone.num_features, num_classes, cfg.dropout, cfg.bilinear_channels)
    else:
        head = HEADS[cfg.head](backbone.num_features, num_classes, cfg.dropout)
    return CarClassifier(backbone, head)


def preprocessing_for(cfg: ModelConfig, image_size: int, crop_pct: float) -> dict[str, Any]:
    """What an input must look like for this model: carried by every checkpoint and export.

    ``resize`` is the side the image is squashed to; evaluation then takes the centre
    ``image_size`` crop (equal sides when crop_pct is 1).
    """
    pretrained_cfg = timm.get_pretrained_cfg(cfg.backbone)
    mean = tuple(pretrained_cfg.mean) if pretrained_cfg else (0.485, 0.456, 0.406)
    std = tuple(pretrained_cfg.std) if pretrained_cfg else (0.229, 0.224, 0.225)
    return {
        "image_size": image_size,
        "resize": int(math.floor(image_size / crop_pct + 0.5)),
        "crop_pct": crop_pct,
        "mean": list(mean),
        "std": list(std),
        "interpolation": "bicubic",
        "resize_mode": "squash",
    }
