"""Checkpoint directories: weights, class names, preprocessing and the resolved config together.

Layout of a checkpoint directory (what ``--checkpoint`` accepts everywhere):
- ``model.pt``: the weights to predict with (EMA weights when EMA was on);
- ``meta.json``: class names, preprocessing, model config, inference settings (AMP dtype,
  channels_last), resolved config, epoch, metrics;
- ``train_state.pt`` (full training checkpoints only): model, optimizer, scheduler, scaler, EMA
  and run state, everything a restarted worker or ``--resume`` continues from.

``make_meta`` is the one writer of meta.json's fields (the training loop, the benchmarks' and the tests'
checkpoints); ``read_meta`` reads them back as a checked, typed :class:`CheckpointMeta`. Inference
(``cars_ray.inference``: evaluate, predict, export, Serve) imports this module and ``cars_ray.models``,
never the training package.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from cars_ray.config import Config, ModelConfig, TrainConfig
from cars_ray.errors import CheckpointError
from cars_ray.preprocessing import Preprocessing

if TYPE_CHECKING:
    from cars_ray.models import CarClassifier

MODEL_FILE = "model.pt"
META_FILE = "meta.json"
STATE_FILE = "train_state.pt"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # "off": no autocast
INFERENCE_AMP = ("bf16", "fp16", "off")


@dataclass(frozen=True)
class InferenceSettings:
    """How a checkpoint runs: ``amp`` is the autocast dtype on a GPU (the one it trained with; bf16 when it
    trained with ``auto``), ``channels_last`` the memory format it trained in."""

    amp: str = "bf16"
    channels_last: bool = True

    @classmethod
    def of_training(cls, train: TrainConfig) -> "InferenceSettings":
        return cls(amp=train.amp if train.amp in ("fp16", "off") else "bf16", channels_last=train.channels_last)

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype on ``device``: the training's AMP dtype on CUDA, None (fp32) elsewhere, where
        autocast slows convolutions down."""
        return AMP_DTYPES.get(self.amp) if device.type == "cuda" else None


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's ``meta.json`` (or an exported ONNX file's metadata), parsed and checked once.

    ``class_names[k]`` is class index k (class id k + 1); ``config`` is the resolved training config as a
    dict (None in an ONNX file); ``metrics`` the epoch's reported metrics."""

    class_names: list[str]
    preprocessing: Preprocessing
    model: ModelConfig
    inference: InferenceSettings = InferenceSettings()
    ema: bool = False
    epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """``backbone + head head``, as /health and the page show the model."""
        return f"{self.model.backbone} + {self.model.head} head"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form :func:`write_checkpoint` stores and :meth:`from_dict` reads back."""
        return {"class_names": list(self.class_names), "preprocessing": self.preprocessing.to_dict(),
                "model": dataclasses.asdict(self.model), "inference": dataclasses.asdict(self.inference),
                "config": self.config, "epoch": self.epoch, "metrics": self.metrics, "ema": self.ema}

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> "CheckpointMeta":
        """Check and type what :meth:`to_dict` wrote; raises CheckpointError in one sentence naming ``source``
        and the field. Fields older writers lacked (``inference``, ``ema``) get the values those runs had."""
        if not isinstance(raw, dict):
            raise CheckpointError(f"{source} must hold a JSON object")
        for key in ("class_names", "preprocessing", "model"):
            if key not in raw:
                raise CheckpointError(f"{source} lacks the field {key!r}")
        names = raw["class_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise CheckpointError(f"{source}: class_names must be a non-empty list of names")
        try:
            model = ModelConfig(**raw["model"])
        except TypeError as err:
            raise CheckpointError(f"{source}: model is not a cars_ray model config ({err})") from None
        inference = raw.get("inference") or {}
        try:
            settings = InferenceSettings(**inference)
        except TypeError as err:
            raise CheckpointError(f"{source}: inference is not a cars_ray inference setting ({err})") from None
        if settings.amp not in INFERENCE_AMP or not isinstance(settings.channels_last, bool):
            raise CheckpointError(f"{source}: inference must have amp one of {', '.join(INFERENCE_AMP)} and "
                                  f"channels_last true or false, got {inference!r}")
        return cls(class_names=names, preprocessing=Preprocessing.from_dict(raw["preprocessing"], source), model=model,
                   inference=settings, ema=bool(raw.get("ema", False)), epoch=raw.get("epoch"),
                   metrics=raw.get("metrics") or {}, config=raw.get("config"))


def make_meta(config: Config, class_names: list[str], preprocessing: Preprocessing, *, ema: bool = False,
              epoch: int | None = None, metrics: dict[str, Any] | None = None) -> CheckpointMeta:
    """The metadata of a checkpoint trained with ``config``: the one writer of meta.json's fields (the
    training loop, the benchmarks' and the tests' checkpoints)."""
    return CheckpointMeta(class_names=list(class_names), preprocessing=preprocessing, model=config.model,
                          inference=InferenceSettings.of_training(config.train), ema=ema, epoch=epoch,
                          metrics=dict(metrics or {}), config=config.to_dict())


def write_checkpoint(directory: str, model_state: dict, meta: CheckpointMeta,
                     train_state: dict | None = None) -> None:
    os.makedirs(directory, exist_ok=True)
    torch.save(model_state, os.path.join(directory, MODEL_FILE))
    with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as handle:
        json.dump(meta.to_dict(), handle, indent=2)
    if train_state is not None:
        torch.save(train_state, os.path.join(directory, STATE_FILE))


def read_meta(directory: str) -> CheckpointMeta:
    """The checkpoint's meta.json, checked: fails in one sentence naming the file and field (CheckpointError)."""
    path = os.path.join(directory, META_FILE)
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint {directory} is not a directory (expected one holding {MODEL_FILE} and {META_FILE})")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {directory} has no {META_FILE}")
    if not os.path.isfile(os.path.join(directory, MODEL_FILE)):
        raise CheckpointError(f"checkpoint {directory} has no {MODEL_FILE}")
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({err})") from None
    return CheckpointMeta.from_dict(raw, path)


def read_train_state(directory: str) -> dict | None:
    path = os.path.join(directory, STATE_FILE)
    return torch.load(path, map_location="cpu", weights_only=False) if os.path.isfile(path) else None


def load_model(directory: str, device: str | torch.device = "cpu",
               meta: CheckpointMeta | None = None) -> tuple[CarClassifier, CheckpointMeta]:
    """The model of a checkpoint, in eval mode on ``device`` (channels_last when it trained so), and its meta
    (``meta``: the one the caller already read, so meta.json is parsed once per load). Raises CheckpointError."""
    meta = meta or read_meta(directory)
    from cars_ray.models import create_model  # timm loads in seconds: only where a model is built

    model = create_model(meta.model, len(meta.class_names), pretrained=False)
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
    model = model.to(torch.device(device)).eval()
    return (model.to(memory_format=torch.channels_last) if meta.inference.channels_last else model), meta


def check_checkpoint(directory: str) -> CheckpointMeta:
    """Open a user-given checkpoint on the driver before Ray starts, as the workers will (meta.json checked,
    model.pt loaded into the model it describes, on the CPU), so a bad one fails here in one sentence
    (CheckpointError) rather than in a Ray worker. Returns its meta."""
    return load_model(directory, "cpu")[1]


def check_classes(meta: CheckpointMeta, class_names: list[str], source: str) -> None:
    """Fail when a checkpoint's classes are not those of the data it is applied to (CheckpointError)."""
    theirs = meta.class_names
    if len(theirs) != len(class_names):
        raise CheckpointError(f"the checkpoint has {len(theirs)} classes but {source} has {len(class_names)}")
    differ = [i for i, (a, b) in enumerate(zip(theirs, class_names)) if a != b]
    if differ:
        i = differ[0]
        raise CheckpointError(f"class {i + 1} is {theirs[i]!r} in the checkpoint but {class_names[i]!r} in {source}")
