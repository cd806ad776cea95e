"""Decoding one image safely: EXIF orientation, any colour mode to RGB, and a reason on failure.

Every reader of pixels (inspection, cropping, training, prediction, serving) goes through
:func:`open_rgb`, so a truncated file or a decompression bomb fails the same way everywhere.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from cars_ray.config import BOX_FRAMES
from cars_ray.errors import BoxError, ImageError

# A truncated JPEG must be reported, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
MAX_IMAGE_PIXELS = 89_478_485  # PIL's own default bomb limit (about 0.25 GB of RGBA)
# A photo of a car is never a strip: past this ratio of long to short side an image is refused from its
# header, before its pixels are decoded (a 20,000,000 x 1 PNG of a few hundred bytes is under the pixel
# limit, yet its resize to a model's input would need gigabytes).
MAX_ASPECT_RATIO = 50
EXIF_NOTE = "cars_ray_note"  # key in Image.info of a note about the decode (an unreadable EXIF block)
ORIENTATION = "cars_ray_orientation"  # key in Image.info: the EXIF orientation (1-8) the decode applied


def open_rgb(source: str | os.PathLike | bytes | BinaryIO, draft_size: tuple[int, int] | None = None,
             max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image file or bytes to an upright RGB PIL image, or raise ImageError(reason).

    ``draft_size`` lets the JPEG decoder scale down by a power of two while decoding (much
    faster for training inputs); it never goes below the requested size. Images whose long side
    exceeds :data:`MAX_ASPECT_RATIO` times the short side are refused before decoding. An EXIF block
    that cannot be read leaves the image as stored, with a note in ``image.info[EXIF_NOTE]``.
    Every colour mode becomes RGB as :func:`to_rgb` says.
    """
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise ImageError("missing: file not found")
        if os.path.getsize(source) == 0:
            raise ImageError("unreadable: empty file (0 bytes)")
    elif isinstance(source, bytes):
        if not source:
            raise ImageError("unreadable: empty file (0 bytes)")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"too large: {width}x{height} pixels exceeds the limit of {max_pixels}")
            if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
                raise ImageError(f"extreme aspect ratio: {width}x{height} pixels is longer than "
                                 f"{MAX_ASPECT_RATIO}:1, the limit for a photo")
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", draft_size)
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"too large: {err}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("unreadable: not an image file in a known format") from None
    except OSError as err:
        text = str(err)
        if "truncated" in text or "broken data stream" in text or "premature end" in text.lower():
            raise ImageError(f"truncated: {text}") from None
        raise ImageError(f"unreadable: {text}") from None
    except Exception as err:  # PIL raises assorted types (SyntaxError, ValueError) for corrupt data
        raise ImageError(f"unreadable: {type(err).__name__}: {err}") from None
    try:
        turned = upright(image)
        rgb = to_rgb(turned)
        if EXIF_NOTE in turned.info:
            rgb.info[EXIF_NOTE] = turned.info[EXIF_NOTE]
        return rgb
    except (OSError, ValueError, OverflowError, MemoryError) as err:  # a mode or size Pillow cannot convert
        raise ImageError(f"unreadable: {type(err).__name__}: {err}") from None


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF Orientation says (Pillow's ``exif_transpose``); the orientation applied
    is in ``image.info[ORIENTATION]``.

    A malformed EXIF block (a numeric tag holding text, a broken offset) makes Pillow raise while it
    reads or rewrites the block: the image is then returned as stored, with the reason in
    ``image.info[EXIF_NOTE]``, rather than losing the photo for its metadata.
    """
    try:
        orientation = int(image.getexif().get(0x0112, 1))
        turned = ImageOps.exif_transpose(image)
    except Exception as err:  # Pillow raises assorted types (SyntaxError, struct.error, TypeError) for bad EXIF
        image.info[EXIF_NOTE] = f"EXIF block unreadable ({type(err).__name__}: {err}): orientation ignored"
        image.info[ORIENTATION] = 1
        return image
    # What was applied, so that a box in stored pixels is turned the same way (never read twice, never disagreeing).
    turned.info[ORIENTATION] = orientation if 1 <= orientation <= 8 else 1
    return turned


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode; transparency is composited on white so cut-outs don't turn black.

    Pillow's own conversions are right for ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``;
    for the wide grey modes they clip, so they are scaled here first: ``I;16*`` by 1/257 (65535 ->
    255); ``I`` (32-bit) likewise when any value exceeds 255 (16-bit data), else as 8-bit; ``F``
    from [0, 1] when its values lie there, else as ``I``. 8-bit and 16-bit saves of one grey photo
    decode within one grey level of each other.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = float(values.max()) if values.size else 0.0
        if image.mode == "F" and top <= 1.0:
            values = values * 255.0
        elif image.mode.startswith("I;16") or top > 255:
            values = values / 257.0
        grey = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
        grey.info.update(image.info)
        return grey.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def clamp_box(box: tuple[float, float, float, float], width: int, height: int,
              margin: float = 0.0) -> tuple[int, int, int, int]:
    """Integer box grown by ``margin`` (a fraction of its size) and clamped to the image.

    Raises BoxError (an ImageError) for a box that is inverted or lies wholly outside the image.
    """
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise BoxError(f"bad box: inverted or empty ({x1:g},{y1:g},{x2:g},{y2:g})")
    # A box of finite corners can still be wider than a float holds (x1=-1e308, x2=1e308: inf), and 0 * inf is NaN:
    # no margin is no growth, and the clamp comes before the rounding, so such a box is the whole image.
    dx, dy = ((x2 - x1) * margin, (y2 - y1) * margin) if margin else (0.0, 0.0)
    left, top = math.floor(max(0.0, x1 - dx)), math.floor(max(0.0, y1 - dy))
    right, bottom = math.ceil(min(float(width), x2 + dx)), math.ceil(min(float(height), y2 + dy))
    if right <= left or bottom <= top:
        raise BoxError(f"bad box: ({x1:g},{y1:g},{x2:g},{y2:g}) lies outside the {width}x{height} image")
    return left, top, right, bottom


BOX_FIELDS = ("x1", "y1", "x2", "y2")


def parse_box(values: str | list | tuple, where: str) -> tuple[float, float, float, float]:
    """A box (x1, y1, x2, y2), in pixels, from ``"x1,y1,x2,y2"`` or four cells, as a user gives it (Serve's
    ``box``, predict.py's box manifest): four finite numbers with x2 > x1 and y2 > y1. Whether it lies on the
    image is known only once the image is open (:func:`clamp_box`). Raises BoxError naming ``where`` and the
    field at fault in one sentence."""
    cells = values.split(",") if isinstance(values, str) else list(values)
    if len(cells) != 4:
        raise BoxError(f"{where}: a box is four numbers x1,y1,x2,y2 in pixels, got {values!r}")
    box = []
    for name, cell in zip(BOX_FIELDS, cells):
        try:
            number = float(str(cell).strip())
        except ValueError:
            raise BoxError(f"{where}: {name} is {str(cell).strip()!r}, not a number") from None
        if not math.isfinite(number):
            raise BoxError(f"{where}: {name} is {number}, not a finite number")
        box.append(number)
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise BoxError(f"{where}: the box ({x1:g},{y1:g},{x2:g},{y2:g}) is empty or inverted: x2 must exceed x1 "
                       "and y2 must exceed y1")
    return x1, y1, x2, y2


def box_problem(box: tuple[float, float, float, float], width: int, height: int) -> str | None:
    """Why a box is suspicious (inverted, past the border), or None when it is fine."""
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return f"bad box: inverted or empty ({x1:g},{y1:g},{x2:g},{y2:g})"
    # Devkit boxes are 1-based inclusive, so x2 == width is still inside the image.
    if x1 < 0 or y1 < 0 or x2 > width + 1 or y2 > height + 1:
        return f"box outside the image: ({x1:g},{y1:g},{x2:g},{y2:g}) on {width}x{height}"
    return None


# ----------------------------------------------------------------------------- the frame of a box
# A box is read in one of two frames. "stored" (the default, and Stanford Cars' own): pixel coordinates of the
# image as its file stores it, before the EXIF Orientation tag is applied, as the devkit's annotations and most
# annotation tools give them. "upright": coordinates of the image as shown, after the orientation is applied
# (what open_rgb returns). A box in the stored frame is moved onto the upright image before cropping.


def stored_to_upright(box: tuple[float, float, float, float], orientation: int, stored_width: int,
                      stored_height: int) -> tuple[float, float, float, float]:
    """A box (x1, y1, x2, y2) in stored-pixel coordinates moved onto the upright image, by the transpose
    that PIL's ``ImageOps.exif_transpose`` applies for ``orientation`` (1-8)."""
    x1, y1, x2, y2 = box
    w, h = stored_width, stored_height
    corners = {
        1: (x1, y1, x2, y2),
        2: (w - x2, y1, w - x1, y2),  # mirrored left-right
        3: (w - x2, h - y2, w - x1, h - y1),  # rotated 180
        4: (x1, h - y2, x2, h - y1),  # mirrored top-bottom
        5: (y1, x1, y2, x2),  # transposed
        6: (h - y2, x1, h - y1, x2),  # stored rotated 90 counter-clockwise: shown turned clockwise
        7: (h - y2, w - x2, h - y1, w - x1),  # transversed
        8: (y1, w - x2, y2, w - x1),  # stored rotated 90 clockwise: shown turned counter-clockwise
    }
    return corners.get(orientation, corners[1])


def box_on_upright(box: tuple[float, float, float, float], frame: str, orientation: int, width: int, height: int,
                   margin: float = 0.0) -> tuple[tuple[int, int, int, int], str | None]:
    """The integer crop box on the upright ``width`` x ``height`` image for ``box`` read in ``frame`` ("stored"
    or "upright") of an image with EXIF ``orientation``, grown by ``margin`` and clamped; and, when the box
    itself reaches past the image in its frame (beyond the 1-pixel slack of 1-based inclusive boxes), the
    sentence that says it was clamped (never done silently: crop reports count and name it).
    Raises ImageError for a box that is inverted, empty or wholly outside the image."""
    if frame not in BOX_FRAMES:
        raise ValueError(f"box frame {frame!r} is not one of {', '.join(BOX_FRAMES)}")
    frame_width, frame_height = frame_size(frame, orientation, width, height)
    problem = box_problem(box, frame_width, frame_height)
    if frame == "stored" and orientation != 1:
        box = stored_to_upright(box, orientation, frame_width, frame_height)
    crop = clamp_box(box, width, height, margin)
    clamped = None
    if problem and problem.startswith("box outside"):
        clamped = (f"box clamped: {problem.split(': ', 1)[1]} in the {frame} frame"
                   f"{f' (EXIF orientation {orientation})' if orientation != 1 else ''} reaches past the image; cropped to "
                   f"{crop[2] - crop[0]}x{crop[3] - crop[1]}")
    return crop, clamped


def frame_size(frame: str, orientation: int, width: int, height: int) -> tuple[int, int]:
    """The size of the image in a box's ``frame``, given the upright ``width`` x ``height``."""
    return (height, width) if frame == "stored" and orientation in (5, 6, 7, 8) else (width, height)
