"""Helpers shared by the benchmark scripts (run as `python benchmarks/X.py`)."""

from __future__ import annotations


def write_checkpoint_for(backbone: str, head: str, size: int, directory: str) -> None:
    from cars_ray.checkpoint import write_checkpoint
    from cars_ray.config import Config, ModelConfig
    from cars_ray.models import create_model
    from cars_ray.preprocessing import Preprocessing

    model_cfg = ModelConfig(backbone=backbone, head=head)
    model = create_model(model_cfg, 196)
    config = Config(model=model_cfg).to_dict()
    meta = {"class_names": [f"class {i}" for i in range(1, 197)], "preprocessing": Preprocessing.resolve(backbone, size).to_dict(),
            "model": config["model"], "config": config, "epoch": 0, "metrics": {}}
    write_checkpoint(directory, model.state_dict(), meta)
