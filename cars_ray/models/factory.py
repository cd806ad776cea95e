"""``create_model``: a timm backbone by name, its weights and a head (its preprocessing: cars_ray.preprocessing)."""

from __future__ import annotations

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
