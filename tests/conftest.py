"""Shared fixtures: a local Ray on loopback, generated datasets in every layout, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import scipy.io

from helpers.data import (
    CLASS_NAMES, REPO, annotation_struct, folder_of, free_port, make_boxed_images, meta_struct, write_class_folders,
    write_names_csv, write_tiny_checkpoint,
)

SHARED = REPO.parent / "shared" / "data" / "stanford-cars"

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray Train polls its workers every 2 s by default; tiny test runs spend much of their time waiting on it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Each run's controller would start an actor that polls for node preemption (spot instances): one more
# process to start per run on 2 cores, for an event no test produces (nodes are killed, not drained).
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


@pytest.fixture(scope="session")
def ray_context():
    """One local Ray instance for the whole session: 2 CPUs, loopback only, always shut down."""
    import ray

    from cars_ray.runtime import start_local_ray

    # The dashboard's state API lets Ray Train's PlacementGroupCleaner free the resources of runs whose
    # controller was stopped (Tune trials); without it they leak and later trials wait forever. Its job API
    # takes the tests' `ray job submit`s.
    context = start_local_ray(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                       dashboard_port=free_port(), _node_ip_address="127.0.0.1", log_to_driver=True,
                       configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield context
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_local(ray_context):
    import ray

    return ray


@pytest.fixture(scope="session")
def ray_address(ray_local) -> str:
    """The address of the session's Ray, for a subprocess that joins it (RAY_ADDRESS): it spares a Ray
    start-up. Pipelines run in the test process (``call_pipeline``) join it without; test_crop's CLI test
    starts a Ray of its own, as the README's main command does."""
    return ray_local.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def job_cluster(ray_context) -> dict:
    """The session's Ray as `ray job submit` reaches a cluster: its dashboard address, and the environment
    a client needs. Token authentication is on (Ray 2.60's default): ray.init keeps the cluster's token in
    ~/.ray/auth_token, where the CLI finds it, making one on a fresh machine."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    return {"address": f"http://{ray_context.dashboard_url}", "env": env}


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "cropped_train").is_dir():
        pytest.skip(f"shared dataset not found at {SHARED}")
    return SHARED


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    return write_class_folders(tmp_path / "folder", 6)


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


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    return write_tiny_checkpoint(tmp_path / "ckpt")


# Modules that start Ray clusters of their own run first, before the session's Ray exists: on 2 cores its
# idle daemons (log monitor, dashboard, agents) would otherwise take CPU from every node of theirs.
OWN_CLUSTERS_FIRST = ("test_multinode.py",)


def pytest_collection_modifyitems(config, items):
    """The modules with clusters of their own first; ``gpu``-marked tests need CUDA, elsewhere they are
    skipped with the reason."""
    import torch

    items.sort(key=lambda item: item.path.name not in OWN_CLUSTERS_FIRST)  # stable: file order otherwise
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
