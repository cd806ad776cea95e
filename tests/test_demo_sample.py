"""The demo sample shipped in the package: true colours, the classes and counts its README states."""

from importlib import resources

import numpy as np
from PIL import Image

from cars_ray.data.layouts import read_dataset


def demo_root():
    return resources.files("cars_ray").joinpath("data/demo/images")


def test_demo_sample_is_rgb_not_bgr():
    # Car photos are redder than they are blue on average (red paint, tail lights, warm light). The sample
    # was once cut from a copy stored with red and blue swapped: then its mean blue exceeded its mean red
    # (99.2 against 104.8); in true RGB the means are 104.9 (red) against 99.3 (blue).
    files = sorted(demo_root().glob("*/*.jpg"))
    means = np.array([np.asarray(Image.open(f).convert("RGB"), dtype=np.float64).mean(axis=(0, 1)) for f in files])
    red, _, blue = means.mean(axis=0)
    assert red > blue + 3, f"mean red {red:.1f} against mean blue {blue:.1f}: the sample looks BGR"


def test_demo_sample_classes_and_counts():
    manifest = read_dataset(str(demo_root()))
    assert len(manifest.class_names) == 10 and len(manifest.table) == 396
    assert manifest.class_names[5] == "Ferrari 458 Italia Coupe 2012"
