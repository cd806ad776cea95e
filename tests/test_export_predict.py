"""ONNX export parity for both heads, and batch prediction with an unreadable input."""

import json

import pandas as pd
import pytest

from helpers.data import CLASS_NAMES, class_colour, make_image, two_tone, write_tiny_checkpoint
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


def test_predict_box_manifest_crops_as_training_on_the_checkpoint_and_its_onnx_file(ray_local, tmp_path):
    """A row's box is cropped before the model (the shared decode), the same for PyTorch and the ONNX graph: the
    crop of a photo scores exactly as that crop saved on its own; the output's box column names the crop taken."""
    checkpoint = write_tiny_checkpoint(tmp_path / "c")
    photos = tmp_path / "photos"
    photos.mkdir()
    two_tone().save(photos / "street.png")  # PNG: lossless, so the crop and the cropped file are the same pixels
    two_tone().crop((0, 0, 60, 90)).save(photos / "red_half.png")
    manifest = photos / "boxes.csv"
    manifest.write_text("path,x1,y1,x2,y2\nstreet.png,0,0,60,90\nred_half.png,,,,\nstreet.png,,,,\n"
                        "street.png,100,50,300,200\nstreet.png,200,100,300,200\n")
    onnx_file = tmp_path / "m.onnx"
    code, out, err = call_pipeline("export.py", "--checkpoint", str(checkpoint), "--out", str(onnx_file))
    assert code == 0, out + err[-3000:]
    frames = []
    for model in (checkpoint, onnx_file):
        output = tmp_path / f"{model.name}.csv"
        code, out, err = call_pipeline("predict.py", "--checkpoint", str(model), "--manifest", str(manifest),
                                       "--output", str(output))
        assert code == 0, out + err[-3000:]
        assert "5 manifest rows, 2 cropped to their box, 1 with an error" in out
        frame = pd.read_csv(output, keep_default_na=False)
        assert list(frame.path) == [str(photos / n) for n in ("street.png", "red_half.png", "street.png", "street.png",
                                                              "street.png")]
        assert list(frame.box) == ["0,0,60,90", "", "", "100,50,120,90", ""]  # the last clamped to the 120x90 photo
        assert frame.error[4].startswith("bad box: (200,100,300,200) lies outside the 120x90 image")
        assert frame.topk[0] == frame.topk[1] != frame.topk[2]
        frames.append(frame)
    torch_probs = [json.loads(t) for t in frames[0].topk[:4]]
    onnx_probs = [json.loads(t) for t in frames[1].topk[:4]]
    for a, b in zip(torch_probs, onnx_probs):
        assert [p["class_id"] for p in a] == [p["class_id"] for p in b]
        assert [p["probability"] for p in a] == pytest.approx([p["probability"] for p in b], abs=1e-4)


def test_predict_refuses_a_bad_box_manifest_before_any_work(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "c")
    manifest = tmp_path / "boxes.csv"
    manifest.write_text("path,x1,y1,x2,y2\na.jpg,1,2,x,4\nb.jpg,5,5,1,9\n")
    code, out, err = call_pipeline("predict.py", "--checkpoint", str(checkpoint), "--manifest", str(manifest),
                                   "--output", str(tmp_path / "p.csv"))
    assert code == 2 and not (tmp_path / "p.csv").exists()
    assert err.strip().splitlines()[-1] == (f"error: 2 bad row(s) in the box manifest: {manifest}:2: x2 is 'x', not a "
                                            "number; the other bad line(s): 3")
