"""Helpers shared by the benchmark scripts (run as `python benchmarks/X.py`)."""

from __future__ import annotations


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
