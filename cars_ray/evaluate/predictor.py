"""A checkpoint's model as a Ray Data actor: decoded uint8 batches in, class scores out."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch

from cars_ray.data.augment import EvalTransform
from cars_ray.train.checkpoint import load_model


def predict_scores(model: torch.nn.Module, transform: EvalTransform, images: torch.Tensor, tta: bool) -> torch.Tensor:
    """Softmax probabilities for a uint8 (B, H, W, 3) batch; TTA averages with the mirror image."""
    x = transform(images)
    probs = model(x).float().softmax(dim=1)
    if tta:
        probs = (probs + model(x.flip(-1)).float().softmax(dim=1)) / 2
    return probs


class CheckpointPredictor:
    """Callable class for ``Dataset.map_batches``: one model per actor, on its GPU when it has one."""

    def __init__(self, checkpoint_dir: str, tta: bool = False):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.meta = load_model(checkpoint_dir, self.device)
        self.transform = EvalTransform(self.meta["preprocessing"]).to(self.device)
        self.tta = tta

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        images = torch.from_numpy(np.ascontiguousarray(batch["image"])).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            probs = predict_scores(self.model, self.transform, images, self.tta)
        out = {key: value for key, value in batch.items() if key != "image"}
        out["probs"] = probs.cpu().numpy().astype(np.float32)
        return out


def predict_dataset(dataset: ray.data.Dataset, checkpoint_dir: str, tta: bool = False, batch_size: int = 64,
                    num_actors: int | None = None) -> ray.data.Dataset:
    """Attach ``probs`` to every row of a decoded dataset, using an actor pool (GPUs when present)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    actors = num_actors or max(1, gpus if gpus else min(2, int(resources.get("CPU", 1))))
    return dataset.map_batches(
        CheckpointPredictor, fn_constructor_kwargs={"checkpoint_dir": checkpoint_dir, "tta": tta},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
    )
