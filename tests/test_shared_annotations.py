"""The shared copy's devkit .mat files and Kaggle CSVs agree (skipped without ../shared)."""

import numpy as np
import pandas as pd
import pytest

from cars_ray.data.layouts import read_meta_mat, read_names_csv

pytestmark = pytest.mark.shared_data


def test_devkit_and_kaggle_annotations_agree(shared_data):
    import scipy.io

    mat = scipy.io.loadmat(shared_data / "devkit" / "cars_train_annos.mat", squeeze_me=True, struct_as_record=False)
    devkit = pd.DataFrame([{
        "image_name": str(r.fname), "x_min": int(r.bbox_x1), "y_min": int(r.bbox_y1),
        "x_max": int(r.bbox_x2), "y_max": int(r.bbox_y2), "label": int(getattr(r, "class")),
    } for r in mat["annotations"]])
    kaggle = pd.read_csv(shared_data / "anno_train.csv")
    assert len(devkit) == len(kaggle) == 8144
    merged = devkit.merge(kaggle, on="image_name", suffixes=("_mat", "_csv"))
    assert len(merged) == 8144
    for column in ("x_min", "y_min", "x_max", "y_max", "label"):
        assert np.array_equal(merged[f"{column}_mat"], merged[f"{column}_csv"]), column


def test_196_names_agree(shared_data):
    names_csv = read_names_csv(shared_data / "names.csv")
    names_mat = read_meta_mat(shared_data / "devkit" / "cars_meta.mat")
    assert len(names_csv) == 196 and names_csv == names_mat
    assert names_csv[1] == "Acura RL Sedan 2012"
