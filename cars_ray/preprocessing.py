"""What an input must look like for a model: one typed contract, resolved once, carried everywhere.

A :class:`Preprocessing` is resolved from the backbone's timm pretrained config (mean, std,
interpolation) and the data config (sizes, resize mode, box margin), written into every
checkpoint and ONNX file, and read back with :meth:`Preprocessing.from_dict`. It owns the two
steps every path shares, so training, evaluation, prediction, export and Serve cannot drift:

- :meth:`Preprocessing.decode`: a file or bytes -> the uint8 (resize, resize, 3) array that the
  decoded cache, the predictors and the Serve ingress hold;
- :meth:`Preprocessing.eval_view`: the module that turns a uint8 (B, resize, resize, 3) batch
  into the normalised (B, 3, image_size, image_size) model input (centre crop, scale, normalise).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from cars_ray.config import BOX_FRAMES, RESIZE_MODES, Config
from cars_ray.data.images import ORIENTATION, box_on_upright, open_rgb
from cars_ray.errors import CheckpointError, ImageError

INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Preprocessing:
    image_size: int  # the model's input side
    resize: int  # the decoded square's side; evaluation takes the centre image_size crop of it
    crop_pct: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "squash"
    box_margin: float = 0.0  # boxes (when the layout has them) grow by this fraction before cropping
    box_frame: str = "stored"  # the frame boxes are read in: stored pixels, or upright (after EXIF orientation)
    # The training protocol: True, a dataset's boxes crop every image it trains and evaluates on ("box crops");
    # False, whole images (the literature's "without bounding box" protocol). Checkpoints written before the field
    # existed trained on box crops, which is what its default reads them as.
    use_boxes: bool = True

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Why these values cannot be used, or None."""
        if not (isinstance(self.image_size, int) and isinstance(self.resize, int) and 0 < self.image_size <= self.resize):
            return f"image_size {self.image_size!r} and resize {self.resize!r} must be whole numbers with 0 < image_size <= resize"
        if not (math.isfinite(self.crop_pct) and 0 < self.crop_pct <= 1):
            return f"crop_pct {self.crop_pct!r} must be in (0, 1]"
        if len(self.mean) != 3 or len(self.std) != 3 or not all(math.isfinite(v) for v in (*self.mean, *self.std)) \
                or min(self.std) <= 0:
            return f"mean {self.mean!r} and std {self.std!r} must be three finite numbers each (std > 0)"
        if self.interpolation not in INTERPOLATIONS:
            return f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}"
        if self.resize_mode not in RESIZE_MODES:
            return f"resize_mode {self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}"
        if not (math.isfinite(self.box_margin) and self.box_margin >= 0):
            return f"box_margin {self.box_margin!r} must be finite and >= 0"
        if self.box_frame not in BOX_FRAMES:
            return f"box_frame {self.box_frame!r} is not one of {', '.join(BOX_FRAMES)}"
        if not isinstance(self.use_boxes, bool):
            return f"use_boxes {self.use_boxes!r} must be true or false"
        return None

    @property
    def protocol(self) -> str:
        """What the model was trained on, in words: "box crops" or "whole images" (Serve's /health, the page)."""
        return "box crops" if self.use_boxes else "whole images"

    @classmethod
    def resolve(cls, backbone: str, image_size: int, crop_pct: float = 1.0, resize_mode: str = "squash",
                box_margin: float = 0.0, box_frame: str = "stored", use_boxes: bool = True) -> "Preprocessing":
        """Mean, std and interpolation from the backbone's timm pretrained config; sizes from the data config."""
        import timm

        pretrained = timm.get_pretrained_cfg(backbone)
        mean = tuple(pretrained.mean) if pretrained else (0.485, 0.456, 0.406)
        std = tuple(pretrained.std) if pretrained else (0.229, 0.224, 0.225)
        interpolation = pretrained.interpolation if pretrained and pretrained.interpolation in INTERPOLATIONS else "bicubic"
        return cls(image_size=image_size, resize=int(math.floor(image_size / crop_pct + 0.5)), crop_pct=crop_pct,
                   mean=mean, std=std, interpolation=interpolation, resize_mode=resize_mode, box_margin=box_margin,
                   box_frame=box_frame, use_boxes=use_boxes)

    @classmethod
    def from_config(cls, config: Config) -> "Preprocessing":
        data = config.data
        return cls.resolve(config.model.backbone, data.image_size, data.crop_pct, data.resize_mode, data.box_margin,
                           data.box_frame, data.use_boxes)

    def decode_fields(self) -> dict[str, Any]:
        """The fields :meth:`decode` reads: two preprocessings with equal ones decode every image alike (the key
        of the streaming path's decoded records, ``cars_ray.data.records``)."""
        return {name: getattr(self, name) for name in ("resize", "interpolation", "resize_mode", "box_margin",
                                                        "box_frame")}

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> "Preprocessing":
        """Read back what :meth:`to_dict` wrote; fails in one sentence naming ``source`` and the field."""
        if not isinstance(values, dict):
            raise CheckpointError(f"{source}: preprocessing must be a mapping, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = required - set(values)
        if missing:
            raise CheckpointError(f"{source}: preprocessing lacks the field(s) {', '.join(sorted(missing))}")
        known = {k: v for k, v in values.items() if k in names}  # extra keys (older or newer writers) are ignored
        try:
            known["mean"], known["std"] = tuple(float(v) for v in known["mean"]), tuple(float(v) for v in known["std"])
            return cls(**known)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: preprocessing is not usable ({err})") from None

    # ------------------------------------------------------------------ the shared steps

    def row_box(self, row: Any) -> tuple[float, float, float, float] | None:
        """The box a dataset row (a manifest or split-table row: mapping or named tuple with x1, y1, x2, y2) is
        cropped to under this protocol: its box, or None for a row without one (NaN) or when ``use_boxes`` is
        False (whole images). Training's decoded cache and stream, evaluation and export's calibration all
        ask here, so the protocol a checkpoint records is the one every path applies."""
        get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
        box = tuple(float(get(name)) for name in ("x1", "y1", "x2", "y2"))
        return box if self.use_boxes and not any(math.isnan(v) for v in box) else None

    def decode(self, source: str | os.PathLike | bytes | BinaryIO, box: tuple[float, float, float, float] | None = None,
               max_pixels: int | None = None) -> np.ndarray:
        """Decode, crop to the box grown by ``box_margin`` (when given), resize: uint8 (resize, resize, 3).

        ``box`` (x1, y1, x2, y2) is read in ``box_frame``: stored pixels (moved onto the upright image by the
        EXIF orientation the decode applied) or upright pixels; one reaching past the image is clamped to it, as crop.py
        does (inspect_data.py and crop_report.json name such boxes).
        Raises :class:`~cars_ray.errors.ImageError` with the reason when the image cannot be used
        (:class:`~cars_ray.errors.BoxError` when the box is inverted, empty or wholly outside the image).
        """
        return self.decode_crop(source, box, max_pixels)[0]

    def decode_crop(self, source: str | os.PathLike | bytes | BinaryIO,
                    box: tuple[float, float, float, float] | None = None,
                    max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
        """:meth:`decode`, and the crop it took: (left, top, right, bottom) in whole pixels of the upright image,
        ``box`` grown by ``box_margin`` and clamped to the image; None when no box was given (the whole image).
        Serve's answer and predict.py's output report it, so a user sees which pixels were classified."""
        # Without a box the JPEG decoder may scale down by a power of two, never below the target size.
        draft = None if box is not None else (self.resize, self.resize)
        kwargs = {"max_pixels": max_pixels} if max_pixels else {}
        image = open_rgb(source, draft_size=draft, **kwargs)
        crop = None
        if box is not None:
            orientation = image.info.get(ORIENTATION, 1) if self.box_frame == "stored" else 1  # as the decode applied it
            crop = box_on_upright(box, self.box_frame, orientation, image.width, image.height, self.box_margin)[0]
            image = image.crop(crop)
        return self.resize_image(image), crop

    def resize_image(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> uint8 (resize, resize, 3); raises ImageError when Pillow cannot resize it.

        ``shorter``: the short side scaled to ``resize`` and the centre square kept, computed as one
        resize of that square's source region (Pillow's ``box``), so a long strip never materialises
        a huge intermediate image: memory stays that of the output.
        """
        resample = INTERPOLATIONS[self.interpolation]
        box = None
        if self.resize_mode == "shorter":
            scale = self.resize / min(image.width, image.height)
            width, height = max(self.resize, round(image.width * scale)), max(self.resize, round(image.height * scale))
            left, top = (width - self.resize) // 2, (height - self.resize) // 2
            # The centre square of the resized image, in source pixels.
            box = (left * image.width / width, top * image.height / height,
                   (left + self.resize) * image.width / width, (top + self.resize) * image.height / height)
        try:
            image = image.resize((self.resize, self.resize), resample, box=box, reducing_gap=3.0)
        except (ValueError, OverflowError, MemoryError) as err:
            raise ImageError(f"unreadable: cannot resize {image.width}x{image.height} ({type(err).__name__}: {err})") from None
        return np.asarray(image, dtype=np.uint8)

    def eval_view(self, channels_last: bool = False):
        """The :class:`~cars_ray.views.EvalView` module of this preprocessing (torch loads only here)."""
        from cars_ray.views import EvalView

        return EvalView(self, channels_last)
