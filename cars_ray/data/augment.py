"""Batched training augmentation on the worker's device (the GPU when there is one, else the CPU).

The decoded cache holds uint8 (B, resize, resize, 3) images; :class:`TrainAugment` turns a batch of
them into normalised model input with every sample drawing its own random parameters, in a few
batched tensor operations: no per-sample Python loop and no host synchronisation inside a step.

Levels: ``none`` (the evaluation view), ``light`` (random resized crop + flip), ``standard``
(+ colour jitter), ``strong`` (+ RandAugment, written as timm writes it: ``rand-m9-mstd0.5``
means what it means in timm: 2 ops per image from timm's 15, each applied with probability 0.5,
magnitude drawn per op from N(9, 0.5) clipped to [0, 10], timm's level-to-argument mappings,
bilinear resampling and a mean-colour fill).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from cars_ray.config import AUGMENT_LEVELS
from cars_ray.data.augment_spec import LEVEL_DENOM, RandAugmentSpec
from cars_ray.preprocessing import Preprocessing

# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in timm's order (geometric ones last).
COLOUR_OPS = ("AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
              "Brightness", "Sharpness")
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_OPS = COLOUR_OPS + GEOMETRIC_OPS
LUMA = (0.299, 0.587, 0.114)  # PIL's RGB -> L weights
LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))  # the random resized crop's aspect ratios, as torchvision's


class BatchedRandAugment(nn.Module):
    """timm's RandAugment for a float batch (B, 3, H, W) in [0, 1], each sample with its own draws.

    Per layer, every sample picks one of the 15 ops, applies it with probability ``prob`` at its
    own magnitude. The colour ops are evaluated for the whole batch and selected per sample with
    ``torch.where``; the geometric ops become one per-sample affine warp (identity where unused).
    """

    def __init__(self, spec: RandAugmentSpec, fill: tuple[float, float, float]):
        super().__init__()
        self.spec = spec
        self.register_buffer("fill", torch.tensor(fill, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        smooth = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0  # PIL's SMOOTH
        self.register_buffer("smooth", smooth.expand(3, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.spec.num_ops):
            batch = x.shape[0]
            op = torch.randint(len(RAND_OPS), (batch,), device=x.device)
            op = torch.where(torch.rand(batch, device=x.device) < self.spec.prob, op, -1)  # -1: this layer skipped
            level = self.sample_level(batch, x.device)
            x = self.colour(x, op, level)
            x = self.geometric(x, op, level)
        return x

    def sample_level(self, batch: int, device: torch.device) -> torch.Tensor:
        """Magnitude / 10 per sample: N(m, mstd) (uniform in [0, m] when mstd > 100), clipped to [0, mmax]."""
        spec = self.spec
        if spec.magnitude_std > 100:
            magnitude = torch.rand(batch, device=device) * spec.magnitude
        else:
            magnitude = spec.magnitude + spec.magnitude_std * torch.randn(batch, device=device)
        return magnitude.clamp(0.0, spec.magnitude_max) / LEVEL_DENOM

    @staticmethod
    def random_sign(level: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.rand_like(level) < 0.5, -level, level)

    def colour(self, x: torch.Tensor, op: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        view = (-1, 1, 1, 1)
        pixels = (x * 255.0).round_()  # timm works on uint8 PIL images
        if self.spec.increasing:
            bits = 4 - torch.floor(level * 4)
            threshold = 256 - torch.floor(level * 256).clamp(max=256)
            factor = (1.0 + self.random_sign(level * 0.9)).clamp(min=0.1)
        else:
            bits = torch.floor(level * 4)
            threshold = torch.floor(level * 256).clamp(max=256)
            factor = level * 1.8 + 0.1
        factor = factor.view(view)
        gray = (LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3])
        results = {
            "AutoContrast": lambda: self.auto_contrast(x),
            "Equalize": lambda: self.equalize(pixels) / 255.0,
            "Invert": lambda: 1.0 - x,
            "Posterize": lambda: self.posterize(pixels, bits.view(view)) / 255.0,
            "Solarize": lambda: torch.where(pixels >= threshold.view(view), 255.0 - pixels, pixels) / 255.0,
            "SolarizeAdd": lambda: torch.where(pixels < 128, (pixels + torch.floor(level * 110).clamp(max=128)
                                                              .view(view)).clamp(max=255.0), pixels) / 255.0,
            "Color": lambda: gray + factor * (x - gray),
            "Contrast": lambda: gray.mean(dim=(2, 3), keepdim=True) + factor * (x - gray.mean(dim=(2, 3), keepdim=True)),
            "Brightness": lambda: x * factor,
            "Sharpness": lambda: self.sharpen(x, factor),
        }
        for name in COLOUR_OPS:
            chosen = (op == RAND_OPS.index(name)).view(view)
            x = torch.where(chosen, results[name]().clamp(0.0, 1.0), x)
        return x

    @staticmethod
    def auto_contrast(x: torch.Tensor) -> torch.Tensor:
        low = x.amin(dim=(2, 3), keepdim=True)
        high = x.amax(dim=(2, 3), keepdim=True)
        spread = high - low
        return torch.where(spread > 0, (x - low) / spread.clamp(min=1e-6), x)

    @staticmethod
    def posterize(pixels: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        step = torch.pow(2.0, 8.0 - bits)  # keep the top ``bits`` bits
        return torch.floor(pixels / step) * step

    @staticmethod
    def equalize(pixels: torch.Tensor) -> torch.Tensor:
        """PIL's ImageOps.equalize per channel, batched (histograms by scatter_add, no host sync)."""
        batch, channels, height, width = pixels.shape
        values = pixels.long().clamp(0, 255).view(batch * channels, -1)
        hist = torch.zeros(batch * channels, 256, device=pixels.device).scatter_add_(
            1, values, torch.ones_like(values, dtype=torch.float32))
        bins = torch.arange(256, device=pixels.device)
        last_bin = torch.where(hist > 0, bins, -1).amax(dim=1, keepdim=True)
        last_count = hist.gather(1, last_bin.clamp(min=0))
        step = torch.floor((hist.sum(dim=1, keepdim=True) - last_count) / 255.0)
        before = torch.cumsum(hist, dim=1) - hist
        lut = torch.floor((torch.floor(step / 2) + before) / step.clamp(min=1)).clamp(max=255.0)
        lut = torch.where(step > 0, lut, bins.float())  # one colour only: PIL leaves the channel as it is
        return lut.gather(1, values).view(batch, channels, height, width)

    def sharpen(self, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """PIL's ImageEnhance.Sharpness: blend with the SMOOTH-filtered image; the border stays as it is."""
        blurred = x.clone()
        blurred[..., 1:-1, 1:-1] = F.conv2d(x, self.smooth.to(x.dtype), groups=3)
        return blurred + factor * (x - blurred)

    def geometric(self, x: torch.Tensor, op: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Rotate, ShearX/Y, TranslateX/YRel as one affine warp per sample, filled with the mean colour."""
        batch, _, height, width = x.shape
        signed = self.random_sign(level)
        degrees = torch.where(op == RAND_OPS.index("Rotate"), signed * 30.0, 0.0)
        shear_x = torch.where(op == RAND_OPS.index("ShearX"), signed * 0.3, 0.0)
        shear_y = torch.where(op == RAND_OPS.index("ShearY"), signed * 0.3, 0.0)
        move_x = torch.where(op == RAND_OPS.index("TranslateXRel"), signed * 0.45 * width, 0.0)
        move_y = torch.where(op == RAND_OPS.index("TranslateYRel"), signed * 0.45 * height, 0.0)
        # PIL's inverse maps (output pixel -> input pixel), as timm calls them; at most one term is non-zero.
        angle = -torch.deg2rad(degrees)
        cos, sin = torch.cos(angle), torch.sin(angle)
        centre_x, centre_y = width / 2.0, height / 2.0
        a, b, d, e = cos, sin + shear_x, -sin + shear_y, cos
        c = centre_x - cos * centre_x - sin * centre_y + move_x
        f = centre_y + sin * centre_x - cos * centre_y + move_y
        theta = pixel_affine_to_theta(torch.stack([a, b, c, d, e, f], dim=1), height, width)
        grid = F.affine_grid(theta.to(x.dtype), [batch, 4, height, width], align_corners=False)
        ones = torch.ones_like(x[:, :1])
        warped = F.grid_sample(torch.cat([x, ones], 1), grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        filled = warped[:, :3] + (1.0 - warped[:, 3:4]) * self.fill.to(x.dtype)
        chosen = (op >= len(COLOUR_OPS)).view(-1, 1, 1, 1)  # others keep their pixels, not an identity resampling
        return torch.where(chosen, filled, x)


def pixel_affine_to_theta(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 6) PIL-style affine maps in pixel coordinates -> (B, 2, 3) ``affine_grid`` thetas.

    Pixel coordinates X in [0, W] relate to normalised u in [-1, 1] (align_corners=False) by
    X = (u + 1) W / 2; substituting into X_in = a X + b Y + c (and likewise for Y) gives theta.
    """
    a, b, c, d, e, f = matrix.unbind(1)
    ratio = height / width
    theta_x = torch.stack([a, b * ratio, a + b * ratio + 2 * c / width - 1], dim=1)
    theta_y = torch.stack([d / ratio, e, d / ratio + e + 2 * f / height - 1], dim=1)
    return torch.stack([theta_x, theta_y], dim=1)


class TrainAugment(nn.Module):
    """Per-sample random resized crop, flip, RandAugment and colour jitter, then normalisation."""

    def __init__(self, preprocessing: Preprocessing, level: str = "standard", scale_min: float = 0.25,
                 hflip: float = 0.5, color_jitter: float = 0.2, randaugment: str = "rand-m9-mstd0.5",
                 channels_last: bool = False, host_geometry: bool = False):
        super().__init__()
        # host_geometry: the streaming path's Ray Data tasks already drew the random resized crop and the flip
        # (cars_ray.data.stream.random_geometry): batches arrive at image_size and only the rest happens here.
        self.host_geometry = host_geometry
        if level not in AUGMENT_LEVELS:
            raise ValueError(f"augment level must be one of {AUGMENT_LEVELS}, got {level!r}")
        self.level = level
        self.image_size = preprocessing.image_size
        self.scale = (scale_min, 1.0)
        self.log_ratio = LOG_RATIO
        self.hflip = hflip
        self.color_jitter = color_jitter if level in ("standard", "strong") else 0.0
        spec = RandAugmentSpec.parse(randaugment)
        self.randaugment = (BatchedRandAugment(spec, tuple(preprocessing.mean))
                            if level == "strong" and spec.num_ops > 0 else None)
        self.eval_view = preprocessing.eval_view(channels_last)
        self.channels_last = channels_last
        std = torch.tensor(preprocessing.std, dtype=torch.float32)
        self.register_buffer("scale_factor", (1.0 / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-torch.tensor(preprocessing.mean) / std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.level == "none":
            return self.eval_view(images)
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        if not self.host_geometry:
            x = self.random_flip(self.random_resized_crop(x))
        if self.randaugment is not None:
            x = self.randaugment(x)
        if self.color_jitter > 0:
            x = self.jitter(x)
        x = x * self.scale_factor + self.shift
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        """One box per sample (:func:`crop_boxes`, the one crop distribution of both data paths), resampled by
        :func:`resized_crops`."""
        batch, _, height, width = x.shape

        def uniform() -> torch.Tensor:
            return torch.rand(batch, device=x.device)

        return resized_crops(x, crop_boxes(uniform(), uniform(), uniform(), uniform(), height, width, self.scale,
                                           self.log_ratio), self.image_size)

    def random_flip(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.hflip
        return torch.where(flip, x.flip(-1), x)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast and saturation factors drawn per sample from [1-j, 1+j]."""
        batch = x.shape[0]

        def factor() -> torch.Tensor:
            return torch.empty(batch, 1, 1, 1, device=x.device).uniform_(1 - self.color_jitter, 1 + self.color_jitter)

        x = x * factor()
        gray = (LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3])
        x = (x - gray.mean(dim=(2, 3), keepdim=True)) * factor() + gray.mean(dim=(2, 3), keepdim=True)
        gray = (LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3])
        x = (x - gray) * factor() + gray
        return x.clamp_(0.0, 1.0)


def crop_boxes(area_u: torch.Tensor, ratio_u: torch.Tensor, x_u: torch.Tensor, y_u: torch.Tensor, height: int,
               width: int, scale: tuple[float, float], log_ratio: tuple[float, float]) -> torch.Tensor:
    """The random resized crop's boxes, float (N, 4) as (x1, y1, x2, y2) in pixels, from four uniform [0, 1)
    draws per sample (each (N,)): the area a uniform fraction in ``scale`` of the image, the aspect ratio
    log-uniform in ``log_ratio``, each side clamped to the image, the position uniform over where it fits.

    Both data paths draw their crops here (the cached path on the worker's device, the streaming path in its
    Ray Data tasks from per-row draws), so they train on one distribution. Clamping is not torchvision's
    rejection sampling (``RandomResizedCrop.get_params``): its retries of boxes that do not fit favour small ones,
    a mean area of 0.48 of the image against 0.53 here at scale (0.08, 1); the streaming path drew with it at
    first and fell 8 points of test top-1 behind on the CPU parity recipe (docs/benchmarks.md).
    """
    area = (scale[0] + (scale[1] - scale[0]) * area_u) * height * width
    ratio = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * ratio_u)
    box_w = torch.sqrt(area * ratio).clamp(max=width)
    box_h = torch.sqrt(area / ratio).clamp(max=height)
    x0, y0 = x_u * (width - box_w), y_u * (height - box_h)
    return torch.stack([x0, y0, x0 + box_w, y0 + box_h], 1)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Float (N, C, H, W) images cropped to ``boxes`` (N, 4) and resampled to (N, C, size, size) by roi_align."""
    index = torch.arange(x.shape[0], device=x.device, dtype=x.dtype)[:, None]
    # sampling_ratio -1: ceil(box / output) samples per output pixel, so a shrinking box is averaged
    # (anti-aliased) and an enlarging one costs one bilinear sample (3x cheaper than a fixed 2x2).
    return roi_align(x, torch.cat([index, boxes.to(x.dtype)], 1), output_size=size, spatial_scale=1.0,
                     sampling_ratio=-1, aligned=True)


def create_train_augment(data_cfg, preprocessing: Preprocessing, channels_last: bool = False) -> TrainAugment:
    """The training augmentation a :class:`~cars_ray.config.DataConfig` asks for; on the streaming path
    (``data.pipeline: streaming``, resolved) the crop and flip are the stream's, not the worker's."""
    return TrainAugment(preprocessing, data_cfg.augment, data_cfg.rrc_scale_min, data_cfg.hflip,
                        data_cfg.color_jitter, data_cfg.randaugment, channels_last,
                        host_geometry=data_cfg.pipeline == "streaming")
