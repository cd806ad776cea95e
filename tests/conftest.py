"""Shared fixtures: a local Ray on loopback, generated datasets in every layout, the shared data."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "stanford-cars"
CLASS_NAMES = ["Zeta Coupe 2012", "Alpha Sedan 2010", "Ram C/V Cargo Van Minivan 2012", "Beta SUV 2007"]

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray Train polls its workers every 2 s by default; tiny test runs spend much of their time waiting on it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session: 2 CPUs, loopback only, always shut down."""
    import ray

    # The dashboard's state API lets Ray Train's PlacementGroupCleaner free the resources of runs whose
    # controller was stopped (Tune trials); without it they leak and later trials wait forever.
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=free_port(), _node_ip_address="127.0.0.1", log_to_driver=True, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_local) -> str:
    """The address of the session's Ray, for pipelines run as subprocesses (``--address``): joining it
    spares each of them a Ray start-up; test_crop and test_cluster still start their own."""
    return ray_local.get_runtime_context().gcs_address


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "cropped_train").is_dir():
        pytest.skip(f"shared dataset not found at {SHARED}")
    return SHARED


def class_colour(index: int) -> tuple[int, int, int]:
    """Distinct, learnable colours per class."""
    palette = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 200, 30), (200, 40, 200), (30, 200, 200)]
    return palette[index % len(palette)]


def make_image(path: Path, size=(120, 80), colour=(128, 128, 128), seed: int = 0, mode: str = "RGB") -> None:
    """A JPEG/PNG with a coloured car-sized rectangle on noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
    pixels[size[1] // 4: 3 * size[1] // 4, size[0] // 5: 4 * size[0] // 5] = colour
    image = Image.fromarray(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(200)
        image.save(path.with_suffix(".png"))
    elif mode == "CMYK":
        image.convert("CMYK").save(path, format="JPEG")
    else:
        image.save(path, quality=90)


def write_names_csv(path: Path, names=CLASS_NAMES, header: bool = True) -> None:
    lines = (["class_id,class_name"] if header else []) + [f"{i},{n}" for i, n in enumerate(names, 1)]
    path.write_text("\n".join(lines) + "\n")


def folder_of(name: str) -> str:
    return name.replace("/", "-")


def write_class_folders(root: Path, per_class: int, size=(64, 48)) -> Path:
    """<root>/<class>/<image> with names.csv, ``per_class`` images per class, learnable by colour."""
    for c, name in enumerate(CLASS_NAMES):
        for i in range(per_class):
            make_image(root / folder_of(name) / f"{c}_{i:03d}.jpg", size, class_colour(c), seed=c * 1000 + i)
    write_names_csv(root / "names.csv")
    return root


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    return write_class_folders(tmp_path / "folder", 6)


def annotation_struct(records: list[dict]) -> np.ndarray:
    """A devkit-shaped struct array (1, N) with object fields, as scipy.io.loadmat returns it."""
    fields = list(records[0].keys())
    array = np.zeros((1, len(records)), dtype=[(f, "O") for f in fields])
    for i, rec in enumerate(records):
        for f in fields:
            value = rec[f]
            array[0, i][f] = np.array([[value]], dtype=np.uint16) if isinstance(value, int) else np.array([value])
    return array


def make_boxed_images(folder: Path, count: int, seed: int = 0) -> list[dict]:
    """Uncropped images with boxes; returns records (fname, box, class id)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        class_id = i % len(CLASS_NAMES) + 1
        width, height = 160, 120
        x1, y1 = int(rng.integers(1, 40)), int(rng.integers(1, 30))
        x2, y2 = int(rng.integers(x1 + 40, width)), int(rng.integers(y1 + 30, height))
        name = f"{i + 1:05d}.jpg"
        make_image(folder / name, (width, height), class_colour(class_id - 1), seed=seed * 1000 + i)
        records.append({"bbox_x1": x1, "bbox_y1": y1, "bbox_x2": x2, "bbox_y2": y2, "class": class_id, "fname": name})
    return records


def meta_struct(names=CLASS_NAMES) -> dict:
    class_names = np.empty((1, len(names)), dtype=object)
    for i, n in enumerate(names):
        class_names[0, i] = np.array([n])
    return {"class_names": class_names}


@pytest.fixture
def devkit_dataset(tmp_path) -> Path:
    root = tmp_path / "devkit_root"
    train = make_boxed_images(root / "cars_train", 8, seed=1)
    test = make_boxed_images(root / "cars_test", 4, seed=2)
    (root / "devkit").mkdir(parents=True)
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", meta_struct())
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": annotation_struct(train)})
    unlabelled = [{k: v for k, v in r.items() if k != "class"} for r in test]
    scipy.io.savemat(root / "devkit" / "cars_test_annos.mat", {"annotations": annotation_struct(unlabelled)})
    return root


@pytest.fixture
def car_ims_dataset(tmp_path) -> Path:
    root = tmp_path / "car_ims_root"
    records = make_boxed_images(root / "car_ims", 8, seed=3)
    annos = [{"relative_im_path": f"car_ims/{r['fname']}", "bbox_x1": r["bbox_x1"], "bbox_y1": r["bbox_y1"],
              "bbox_x2": r["bbox_x2"], "bbox_y2": r["bbox_y2"], "class": r["class"], "test": i % 2}
             for i, r in enumerate(records)]
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotation_struct(annos)})
    scipy.io.savemat(root / "cars_meta.mat", meta_struct())
    return root


@pytest.fixture
def kaggle_dataset(tmp_path) -> Path:
    root = tmp_path / "kaggle_root"
    for split, seed in (("train", 4), ("test", 5)):
        staging = tmp_path / f"staging_{split}"
        records = make_boxed_images(staging, 8, seed=seed)
        lines = []
        for r in records:
            target = root / "car_data" / "car_data" / split / folder_of(CLASS_NAMES[r["class"] - 1]) / r["fname"]
            target.parent.mkdir(parents=True, exist_ok=True)
            (staging / r["fname"]).rename(target)
            lines.append(f"{r['fname']},{r['bbox_x1']},{r['bbox_y1']},{r['bbox_x2']},{r['bbox_y2']},{r['class']}")
        # Kaggle's own files have no header row; the shared copy has one: cover both.
        header = ["image_name,x_min,y_min,x_max,y_max,label"] if split == "train" else []
        (root / f"anno_{split}.csv").write_text("\n".join(header + lines) + "\n")
    write_names_csv(root / "names.csv", header=False)
    return root


@pytest.fixture
def csv_dataset(tmp_path) -> Path:
    root = tmp_path / "csv_root"
    records = make_boxed_images(root / "imgs", 8, seed=6)
    lines = ["path,label,x1,y1,x2,y2,split"]
    for i, r in enumerate(records):
        lines.append(f"imgs/{r['fname']},{CLASS_NAMES[r['class'] - 1]},{r['bbox_x1']},{r['bbox_y1']},"
                     f"{r['bbox_x2']},{r['bbox_y2']},{'test' if i % 4 == 0 else 'train'}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    write_names_csv(root / "names.csv")
    return manifest


def run_pipeline(script: str, *args: str, env: dict | None = None, timeout: int = 600):
    """Run ``python pipelines/<script> args`` as a user would; returns the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("RAY_ADDRESS", None) if env is None or "RAY_ADDRESS" not in env else None
    return subprocess.run([sys.executable, str(REPO / "pipelines" / script), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def write_tiny_checkpoint(directory: Path, head: str = "linear", num_classes: int = 4, image_size: int = 48) -> Path:
    """An untrained but complete checkpoint (tiny timm test model) for serving/export tests."""
    import torch

    from cars_ray.config import Config, ModelConfig
    from cars_ray.models import create_model, preprocessing_for
    from cars_ray.train.checkpoint import write_checkpoint

    torch.manual_seed(0)
    model_cfg = ModelConfig(backbone="test_efficientnet", weights="none", head=head, bilinear_channels=16)
    model = create_model(model_cfg, num_classes)
    config = Config(model=model_cfg).to_dict()
    meta = {"class_names": CLASS_NAMES[:num_classes], "preprocessing": preprocessing_for(model_cfg, image_size, 0.875),
            "model": config["model"], "config": config, "epoch": 0, "metrics": {}}
    write_checkpoint(str(directory), model.state_dict(), meta)
    return directory


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    return write_tiny_checkpoint(tmp_path / "ckpt")
