"""The batched on-device augmentation, checked on CPU tensors."""

import pytest
import torch

from cars_ray.data.augment import EvalTransform, TrainAugment

PRE = {"image_size": 32, "resize": 40, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


@pytest.mark.parametrize("level", ["none", "light", "standard", "strong"])
def test_levels_give_normalised_batches(level):
    images = torch.randint(0, 256, (6, 40, 40, 3), dtype=torch.uint8)
    out = TrainAugment(PRE, level)(images)
    assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1.0 - 1e-5 and out.max() <= 1.0 + 1e-5


def test_each_sample_gets_its_own_crop():
    torch.manual_seed(0)
    one = torch.randint(0, 256, (1, 40, 40, 3), dtype=torch.uint8)
    batch = one.repeat(8, 1, 1, 1)
    out = TrainAugment(PRE, "light", hflip=0.0)(batch)
    assert not torch.allclose(out[0], out[1])


def test_full_crop_without_flip_matches_resize():
    """scale (1, 1) and a square image: the crop is the whole image, resampled to image_size."""
    gradient = torch.arange(40, dtype=torch.float32).repeat(40, 1)
    image = torch.stack([gradient, gradient, gradient], -1).mul(6).to(torch.uint8)[None]
    augment = TrainAugment(PRE, "light", scale_min=1.0, hflip=0.0)
    augment.log_ratio = (0.0, 0.0)
    out = augment(image)
    row = out[0, 0, 16]
    assert torch.all(row[1:] >= row[:-1]), "left-to-right gradient is kept (no flip)"


def test_eval_view_is_deterministic_centre_crop():
    images = torch.randint(0, 256, (2, 40, 40, 3), dtype=torch.uint8)
    view = EvalTransform(PRE)
    out = view(images)
    expected = (images[:, 4:36, 4:36].permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert torch.allclose(out, expected)
