"""Helpers shared by the benchmark scripts (run as `python benchmarks/X.py`)."""

from __future__ import annotations

import io
import os


def write_checkpoint_for(backbone: str, head: str, size: int, directory: str) -> None:
    from cars_ray.checkpoint import make_meta, write_checkpoint
    from cars_ray.config import Config, ModelConfig
    from cars_ray.models import create_model
    from cars_ray.preprocessing import Preprocessing

    model_cfg = ModelConfig(backbone=backbone, head=head)
    model = create_model(model_cfg, 196)
    config = Config(model=model_cfg)
    meta = make_meta(config, [f"class {i}" for i in range(1, 197)], Preprocessing.resolve(backbone, size), epoch=0)
    write_checkpoint(directory, model.state_dict(), meta)


DEFAULT_BACKBONE, DEFAULT_SIZE = "tf_efficientnet_lite2", 224  # the default model the serving figures use


def sample_jpeg() -> bytes:
    """The JPEG every serving benchmark sends: the demo sample's first image re-encoded at quality 90."""
    from PIL import Image

    from cars_ray.config import DEMO_ROOT
    from cars_ray.data.loading import resolve_root

    root = resolve_root(DEMO_ROOT)
    folder = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))[0]
    path = os.path.join(root, folder, sorted(os.listdir(os.path.join(root, folder)))[0])
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
