"""ONNX export parity for both heads, and batch prediction with an unreadable input."""

import json

import pandas as pd
import pytest

from helpers.data import CLASS_NAMES, class_colour, make_image, write_tiny_checkpoint
from helpers.entry_points import call_pipeline


@pytest.mark.parametrize("head", ["linear", "bilinear_attention"])
def test_export_onnx_parity_and_metadata(tmp_path, head):
    import onnx

    checkpoint = write_tiny_checkpoint(tmp_path / head, head=head)
    out = tmp_path / f"{head}.onnx"
    code, stdout, stderr = call_pipeline("export.py", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out))
    assert code == 0, stdout + stderr[-3000:]
    assert "max |logit difference|" in stdout and "top-1 agreement 1.000" in stdout
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["class_names"]) == CLASS_NAMES
    assert json.loads(props["preprocessing"])["image_size"] == 48


def test_export_fails_when_parity_does_not_hold(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "c")
    out = tmp_path / "m.onnx"
    code, stdout, stderr = call_pipeline("export.py", "--checkpoint", str(checkpoint), "--out", str(out), "--tolerance", "-1")
    assert code == 1 and not out.exists(), stdout + stderr[-3000:]


def test_predict_folders_globs_and_unreadable(ray_local, tmp_path):
    from cars_ray.evaluate.batch_predict import expand_inputs, predict_files

    checkpoint = write_tiny_checkpoint(tmp_path / "c")
    for i in range(5):
        make_image(tmp_path / "photos" / f"{i}.jpg", (64, 48), class_colour(i))
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    make_image(tmp_path / "other" / "x.jpg")
    paths = expand_inputs([str(tmp_path / "photos"), str(tmp_path / "other" / "*.jpg"), str(tmp_path / "gone.jpg")])
    assert len(paths) == 8
    predictions = predict_files(str(checkpoint), paths, topk=3)
    assert list(predictions.path) == paths
    errors = predictions.set_index("path").error
    assert errors[str(tmp_path / "photos" / "broken.jpg")].startswith("unreadable")
    assert errors[str(tmp_path / "gone.jpg")].startswith("missing")
    good = predictions[predictions.error == ""]
    assert len(good) == 6 and good.class_name.isin(CLASS_NAMES).all()
    assert all(len(json.loads(t)) == 3 for t in good.topk)


def test_predict_pipeline_cli(ray_local, tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "c")
    for i in range(3):
        make_image(tmp_path / "in" / f"{i}.jpg")
    (tmp_path / "in" / "bad.png").write_bytes(b"")
    out = tmp_path / "preds.csv"
    code, _, stderr = call_pipeline("predict.py", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"),
                                    "--output", str(out))
    assert code == 0, stderr[-3000:]
    frame = pd.read_csv(out, keep_default_na=False)
    assert len(frame) == 4 and (frame.error != "").sum() == 1
