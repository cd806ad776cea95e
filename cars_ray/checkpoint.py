"""Checkpoint directories: weights, class names, preprocessing and the resolved config together.

Layout of a checkpoint directory (what ``--checkpoint`` accepts everywhere):
- ``model.pt``: the weights to predict with (EMA weights when EMA was on);
- ``meta.json``: class names, preprocessing, model config, inference settings (AMP dtype,
  channels_last), resolved config, epoch, metrics;
- ``train_state.pt`` (full training checkpoints only): model, optimizer, scheduler, scaler, EMA
  and run state, everything a restarted worker or ``--resume`` continues from.

Inference (evaluate, predict, export, Serve) imports this module and ``cars_ray.models``, never
the training package.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import torch

from cars_ray.config import ModelConfig
from cars_ray.errors import CheckpointError
from cars_ray.preprocessing import Preprocessing

if TYPE_CHECKING:
    from cars_ray.models import CarClassifier

MODEL_FILE = "model.pt"
META_FILE = "meta.json"
STATE_FILE = "train_state.pt"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def write_checkpoint(directory: str, model_state: dict, meta: dict[str, Any],
                     train_state: dict | None = None) -> None:
    os.makedirs(directory, exist_ok=True)
    torch.save(model_state, os.path.join(directory, MODEL_FILE))
    with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2)
    if train_state is not None:
        torch.save(train_state, os.path.join(directory, STATE_FILE))


def read_meta(directory: str) -> dict[str, Any]:
    """The checkpoint's meta.json, checked: fails in one sentence naming the file and field."""
    path = os.path.join(directory, META_FILE)
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint {directory} is not a directory (expected one holding {MODEL_FILE} and {META_FILE})")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {directory} has no {META_FILE}")
    if not os.path.isfile(os.path.join(directory, MODEL_FILE)):
        raise CheckpointError(f"checkpoint {directory} has no {MODEL_FILE}")
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    for key in ("class_names", "preprocessing", "model"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks the field {key!r}")
    if not isinstance(meta["class_names"], list) or not meta["class_names"]:
        raise CheckpointError(f"{path}: class_names must be a non-empty list")
    Preprocessing.from_dict(meta["preprocessing"], path)
    return meta


def preprocessing_of(meta: dict[str, Any], source: str = "the checkpoint") -> Preprocessing:
    return Preprocessing.from_dict(meta["preprocessing"], source)


def inference_settings(meta: dict[str, Any], device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype, channels_last) for running a checkpoint on ``device``: the training run's AMP
    dtype on CUDA (bf16 unless it trained in fp16 or without AMP), fp32 on CPU, where autocast
    slows convolutions down; channels_last as trained."""
    settings = meta.get("inference", {})
    channels_last = bool(settings.get("channels_last", True))
    if device.type != "cuda":
        return None, channels_last
    return AMP_DTYPES.get(settings.get("amp", "bf16")), channels_last


def read_train_state(directory: str) -> dict | None:
    path = os.path.join(directory, STATE_FILE)
    return torch.load(path, map_location="cpu", weights_only=False) if os.path.isfile(path) else None


def load_model(directory: str, device: str | torch.device = "cpu") -> tuple[CarClassifier, dict[str, Any]]:
    """The model of a checkpoint, in eval mode on ``device`` (channels_last when it trained so), and its meta."""
    meta = read_meta(directory)
    try:
        model_cfg = ModelConfig(**meta["model"])
    except TypeError as err:
        raise CheckpointError(f"{os.path.join(directory, META_FILE)}: model is not a cars_ray model config ({err})") from None
    from cars_ray.models import create_model  # timm loads in seconds: only where a model is built

    model = create_model(model_cfg, len(meta["class_names"]), pretrained=False)
    path = os.path.join(directory, MODEL_FILE)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file raises assorted types
        raise CheckpointError(f"{path} is not a readable PyTorch weights file ({type(err).__name__})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = str(err).splitlines()
        raise CheckpointError(f"{path} does not fit the model its {META_FILE} describes: "
                              f"{lines[1].strip() if len(lines) > 1 else err}") from None
    device = torch.device(device)
    _, channels_last = inference_settings(meta, device)
    model = model.to(device).eval()
    return (model.to(memory_format=torch.channels_last) if channels_last else model), meta


def check_checkpoint(directory: str) -> dict[str, Any]:
    """Open a user-given checkpoint on the driver before Ray starts, as the workers will (meta.json checked,
    model.pt loaded into the model it describes, on the CPU), so a bad one fails here in one sentence
    (CheckpointError) rather than in a Ray worker. Returns its meta."""
    return load_model(directory, "cpu")[1]


def check_classes(meta: dict[str, Any], class_names: list[str], source: str) -> None:
    """Fail when a checkpoint's classes are not those of the data it is applied to."""
    theirs = meta["class_names"]
    if len(theirs) != len(class_names):
        raise CheckpointError(f"the checkpoint has {len(theirs)} classes but {source} has {len(class_names)}")
    differ = [i for i, (a, b) in enumerate(zip(theirs, class_names)) if a != b]
    if differ:
        i = differ[0]
        raise CheckpointError(f"class {i + 1} is {theirs[i]!r} in the checkpoint but {class_names[i]!r} in {source}")
