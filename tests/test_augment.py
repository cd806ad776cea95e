"""The batched on-device augmentation, checked on CPU tensors (and on CUDA where there is one)."""

import numpy as np
import pytest
import torch
from PIL import Image

from cars_ray.data.augment import RAND_OPS, BatchedRandAugment, TrainAugment
from cars_ray.data.augment_spec import RandAugmentSpec
from cars_ray.preprocessing import Preprocessing

PRE = Preprocessing(image_size=32, resize=40, crop_pct=0.8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


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


def test_eval_view_is_deterministic_centre_crop_and_channels_last():
    images = torch.randint(0, 256, (2, 40, 40, 3), dtype=torch.uint8)
    out = PRE.eval_view()(images)
    expected = (images[:, 4:36, 4:36].permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert torch.allclose(out, expected, atol=1e-6)
    assert PRE.eval_view(channels_last=True)(images).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("text, expected", [
    ("rand-m9-mstd0.5", RandAugmentSpec(magnitude=9, magnitude_std=0.5)),
    ("rand-m7-n3-mstd101-inc1-p0.7", RandAugmentSpec(magnitude=7, num_ops=3, magnitude_std=101, increasing=True, prob=0.7)),
])
def test_randaugment_strings_parse_as_timm_reads_them(text, expected):
    assert RandAugmentSpec.parse(text) == expected
    with pytest.raises(ValueError, match="unknown section 'x3'"):
        RandAugmentSpec.parse("rand-m9-x3")


def test_randaugment_applies_ops_per_sample():
    """One image repeated: with two ops per sample at probability 1, samples come out different."""
    torch.manual_seed(0)
    ra = BatchedRandAugment(RandAugmentSpec(magnitude=9, prob=1.0), (0.5, 0.5, 0.5))
    x = torch.rand(1, 3, 24, 24).repeat(16, 1, 1, 1)
    out = ra(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    distinct = {tuple(sample.flatten()[:64].mul(255).round().int().tolist()) for sample in out}
    assert len(distinct) >= 8, "each sample draws its own ops"
    skipped = BatchedRandAugment(RandAugmentSpec(magnitude=9, prob=0.0), (0.5, 0.5, 0.5))(x)
    assert torch.equal(skipped, x), "probability 0 leaves every sample as it is"


def photo(size: int = 32) -> np.ndarray:
    """A smooth colour image with some texture, as uint8 HWC."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 6, yy * 5, (xx + yy) * 3], -1) + rng.integers(0, 40, (size, size, 3))
    return np.clip(base + 20, 0, 255).astype(np.uint8)


def ours(name: str, image: np.ndarray, magnitude: float, increasing: bool = False) -> np.ndarray:
    """Our batched op ``name`` at a fixed magnitude on one image, as uint8 HWC."""
    ra = BatchedRandAugment(RandAugmentSpec(magnitude=magnitude, increasing=increasing), (0.5, 0.5, 0.5))
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    op = torch.tensor([RAND_OPS.index(name)])
    level = torch.tensor([magnitude / 10])
    out = ra.geometric(x, op, level) if name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel") \
        else ra.colour(x, op, level)
    return (out[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


@pytest.mark.parametrize("name", ["AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd",
                                  "Color", "Contrast", "Brightness", "Sharpness"])
def test_colour_ops_match_timm_at_m9(name):
    """The magnitude means what it means in timm: our op against timm's own PIL op at M9."""
    from timm.data.auto_augment import AugmentOp

    image = photo()
    theirs = np.asarray(AugmentOp(name, prob=1.0, magnitude=9)(Image.fromarray(image)))
    difference = np.abs(ours(name, image, 9).astype(int) - theirs.astype(int))
    assert difference.mean() <= 0.6 and difference.max() <= 1, (name, difference.mean(), difference.max())


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"])
def test_geometric_ops_match_timm_at_m9(name):
    """Geometric ops with bilinear resampling and the mean-colour fill, against timm's op of either sign."""
    from timm.data import auto_augment

    image = photo()
    level = 0.9
    argument = {"Rotate": 30 * level, "ShearX": 0.3 * level, "ShearY": 0.3 * level,
                "TranslateXRel": 0.45 * level, "TranslateYRel": 0.45 * level}[name]
    function = {"Rotate": auto_augment.rotate, "ShearX": auto_augment.shear_x, "ShearY": auto_augment.shear_y,
                "TranslateXRel": auto_augment.translate_x_rel, "TranslateYRel": auto_augment.translate_y_rel}[name]
    candidates = [np.asarray(function(Image.fromarray(image), sign * argument, fillcolor=(128, 128, 128),
                                      resample=Image.Resampling.BILINEAR)) for sign in (1, -1)]
    mine = ours(name, image, 9).astype(int)
    difference = min(np.abs(mine - c.astype(int)).mean() for c in candidates)
    assert difference <= 1.5, (name, difference)


@pytest.mark.gpu
def test_strong_augmentation_and_step_never_synchronise_on_cuda():
    """RandAugment, jitter, crop and flip run without a single host synchronisation inside a step."""
    device = torch.device("cuda")
    augment = TrainAugment(PRE, "strong", randaugment="rand-m9-mstd0.5").to(device)
    images = torch.randint(0, 256, (16, 40, 40, 3), dtype=torch.uint8, device=device)
    augment(images)  # warm-up: lazy CUDA initialisation may synchronise once
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment(images)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == (16, 3, 32, 32)
