"""Generated data for the tests: images, class folders, devkit structs, checkpoints; and running a pipeline."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CLASS_NAMES = ["Zeta Coupe 2012", "Alpha Sedan 2010", "Ram C/V Cargo Van Minivan 2012", "Beta SUV 2007"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_temp_dir() -> Path:
    """A fresh folder for a Ray instance's temp files under a short /tmp name: Ray's socket paths below it
    must stay under 108 bytes (pytest's tmp_path, or a long TMPDIR, are too long)."""
    return Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))


def class_colour(index: int) -> tuple[int, int, int]:
    """Distinct, learnable colours per class."""
    palette = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 200, 30), (200, 40, 200), (30, 200, 200)]
    return palette[index % len(palette)]


def make_image(path: Path, size=(120, 80), colour=(128, 128, 128), seed: int = 0, mode: str = "RGB") -> None:
    """A JPEG/PNG with a coloured car-sized rectangle on noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
    pixels[size[1] // 4: 3 * size[1] // 4, size[0] // 5: 4 * size[0] // 5] = colour
    image = Image.fromarray(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(200)
        image.save(path.with_suffix(".png"))
    elif mode == "CMYK":
        image.convert("CMYK").save(path, format="JPEG")
    else:
        image.save(path, quality=90)


def two_tone(size=(120, 90)) -> Image.Image:
    """Left half red, right half blue: a box over one half is another picture than the whole photo."""
    image = Image.new("RGB", size, (20, 20, 220))
    image.paste((220, 20, 20), (0, 0, size[0] // 2, size[1]))
    return image


def write_names_csv(path: Path, names=CLASS_NAMES, header: bool = True) -> None:
    lines = (["class_id,class_name"] if header else []) + [f"{i},{n}" for i, n in enumerate(names, 1)]
    path.write_text("\n".join(lines) + "\n")


def folder_of(name: str) -> str:
    return name.replace("/", "-")


def write_class_folders(root: Path, per_class: int, size=(64, 48)) -> Path:
    """<root>/<class>/<image> with names.csv, ``per_class`` images per class, learnable by colour."""
    for c, name in enumerate(CLASS_NAMES):
        for i in range(per_class):
            make_image(root / folder_of(name) / f"{c}_{i:03d}.jpg", size, class_colour(c), seed=c * 1000 + i)
    write_names_csv(root / "names.csv")
    return root


def annotation_struct(records: list[dict]) -> np.ndarray:
    """A devkit-shaped struct array (1, N) with object fields, as scipy.io.loadmat returns it."""
    fields = list(records[0].keys())
    array = np.zeros((1, len(records)), dtype=[(f, "O") for f in fields])
    for i, rec in enumerate(records):
        for f in fields:
            value = rec[f]
            array[0, i][f] = np.array([[value]], dtype=np.uint16) if isinstance(value, int) else np.array([value])
    return array


def make_boxed_images(folder: Path, count: int, seed: int = 0) -> list[dict]:
    """Uncropped images with boxes; returns records (fname, box, class id)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        class_id = i % len(CLASS_NAMES) + 1
        width, height = 160, 120
        x1, y1 = int(rng.integers(1, 40)), int(rng.integers(1, 30))
        x2, y2 = int(rng.integers(x1 + 40, width)), int(rng.integers(y1 + 30, height))
        name = f"{i + 1:05d}.jpg"
        make_image(folder / name, (width, height), class_colour(class_id - 1), seed=seed * 1000 + i)
        records.append({"bbox_x1": x1, "bbox_y1": y1, "bbox_x2": x2, "bbox_y2": y2, "class": class_id, "fname": name})
    return records


def meta_struct(names=CLASS_NAMES) -> dict:
    class_names = np.empty((1, len(names)), dtype=object)
    for i, n in enumerate(names):
        class_names[0, i] = np.array([n])
    return {"class_names": class_names}


def run_pipeline(script: str, *args: str, env: dict | None = None, timeout: int = 600):
    """Run ``python pipelines/<script> args`` as a user would; returns the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("RAY_ADDRESS", None) if env is None or "RAY_ADDRESS" not in env else None
    return subprocess.run([sys.executable, str(REPO / "pipelines" / script), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def write_tiny_checkpoint(directory: Path, head: str = "linear", num_classes: int = 4, image_size: int = 48) -> Path:
    """An untrained but complete checkpoint (tiny timm test model) for serving/export tests."""
    import torch

    from cars_ray.checkpoint import make_meta, write_checkpoint
    from cars_ray.config import Config, ModelConfig
    from cars_ray.models import create_model
    from cars_ray.preprocessing import Preprocessing

    torch.manual_seed(0)
    model_cfg = ModelConfig(backbone="test_efficientnet", weights="none", head=head, bilinear_channels=16)
    model = create_model(model_cfg, num_classes)
    preprocessing = Preprocessing.resolve(model_cfg.backbone, image_size, 0.875)
    meta = make_meta(Config(model=model_cfg), CLASS_NAMES[:num_classes], preprocessing, epoch=0)
    write_checkpoint(str(directory), model.state_dict(), meta)
    return directory

