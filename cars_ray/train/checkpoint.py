"""Checkpoint directories: weights, class names, preprocessing and the resolved config together.

Layout of a checkpoint directory (what ``--checkpoint`` accepts everywhere):
- ``model.pt``: the weights to predict with (EMA weights when EMA was on);
- ``meta.json``: class names, preprocessing, model config, resolved config, epoch, metrics;
- ``train_state.pt`` (training checkpoints only): optimizer, scheduler, scaler, EMA, history.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from cars_ray.config import ModelConfig
from cars_ray.errors import CheckpointError
from cars_ray.models import CarClassifier, create_model

MODEL_FILE = "model.pt"
META_FILE = "meta.json"
STATE_FILE = "train_state.pt"


def write_checkpoint(directory: str, model_state: dict, meta: dict[str, Any],
                     train_state: dict | None = None) -> None:
    os.makedirs(directory, exist_ok=True)
    torch.save(model_state, os.path.join(directory, MODEL_FILE))
    with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2)
    if train_state is not None:
        torch.save(train_state, os.path.join(directory, STATE_FILE))


def read_meta(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, META_FILE)
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint {directory} is not a directory (expected one holding {MODEL_FILE} and {META_FILE})")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {directory} has no {META_FILE}")
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({err})") from None
    for key in ("class_names", "preprocessing", "model"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks the field {key!r}")
    return meta


def read_train_state(directory: str) -> dict | None:
    path = os.path.join(directory, STATE_FILE)
    return torch.load(path, map_location="cpu", weights_only=False) if os.path.isfile(path) else None


def load_model(directory: str, device: str | torch.device = "cpu") -> tuple[CarClassifier, dict[str, Any]]:
    """The model of a checkpoint, in eval mode on ``device``, and its meta."""
    meta = read_meta(directory)
    model = create_model(ModelConfig(**meta["model"]), len(meta["class_names"]), pretrained=False)
    path = os.path.join(directory, MODEL_FILE)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {directory} has no {MODEL_FILE}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit the model its {META_FILE} describes: "
                              f"{str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}") from None
    return model.to(device).eval(), meta


def check_classes(meta: dict[str, Any], class_names: list[str], source: str) -> None:
    """Fail when a checkpoint's classes are not those of the data it is applied to."""
    theirs = meta["class_names"]
    if len(theirs) != len(class_names):
        raise CheckpointError(f"the checkpoint has {len(theirs)} classes but {source} has {len(class_names)}")
    differ = [i for i, (a, b) in enumerate(zip(theirs, class_names)) if a != b]
    if differ:
        i = differ[0]
        raise CheckpointError(f"class {i + 1} is {theirs[i]!r} in the checkpoint but {class_names[i]!r} in {source}")
