"""Classification heads over a backbone's last feature map (B, C, H, W)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cars_ray.config import HEAD_NAMES


class LinearHead(nn.Module):
    """Plain fine-tuning: global average pool, dropout, fully connected."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.2):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features.mean(dim=(2, 3))))


class SpatialSelfAttention(nn.Module):
    """SAGAN-style self-attention over positions; gamma starts at 0 so training starts from identity."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # B, HW, C'
        k = self.key(x).flatten(2).transpose(1, 2)
        v = self.value(x).flatten(2).transpose(1, 2)  # B, HW, C
        attended = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # softmax(q k^T) v, as in SAGAN
        return x + self.gamma * attended.transpose(1, 2).reshape(b, c, h, w)


class BilinearAttentionHead(nn.Module):
    """The notebook's head: self-attention, 1x1 reduction, bilinear pooling, signed sqrt, L2, linear."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5, reduced_channels: int = 512):
        super().__init__()
        self.attention = SpatialSelfAttention(in_channels)
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, reduced_channels, 1, bias=False),
            nn.BatchNorm2d(reduced_channels),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(reduced_channels * reduced_channels, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.reduce(self.attention(features))
        x = x.flatten(2).float()  # B, C, HW; the outer product overflows fp16, so pool in fp32
        pooled = torch.bmm(x, x.transpose(1, 2)) / x.shape[-1]  # divided by the number of positions
        pooled = pooled.flatten(1)
        pooled = torch.sign(pooled) * torch.sqrt(pooled.abs() + 1e-8)
        pooled = F.normalize(pooled, dim=1)
        return self.classifier(self.dropout(pooled).to(self.classifier.weight.dtype))


HEADS = dict(zip(HEAD_NAMES, (LinearHead, BilinearAttentionHead), strict=True))  # names: config.HEAD_NAMES
