"""Boxes wherever a photo enters (Serve's request parsing, predict.py's box manifest, the shared decode) and the
whole-image protocol (data.use_boxes: false), in this process without Ray. Over HTTP: tests/test_serve.py; the
manifest through predict.py and ONNX: tests/test_export_predict.py; a training run: tests/test_train.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cars_ray.config import load_config
from cars_ray.data.images import parse_box
from cars_ray.errors import BoxError, ConfigError, DataError
from cars_ray.preprocessing import Preprocessing
from helpers.data import two_tone

PREP = Preprocessing(image_size=32, resize=32, crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def two_tone_png(path, size=(120, 90)) -> None:
    two_tone(size).save(path)  # lossless: a crop's decode can be compared pixel for pixel


@pytest.mark.parametrize("given, words", [
    ("1,2,3", "a box is four numbers x1,y1,x2,y2 in pixels, got '1,2,3'"),
    ("1,2,3,4,5", "a box is four numbers x1,y1,x2,y2 in pixels"),
    ("", "a box is four numbers"),
    ("a,2,30,40", "x1 is 'a', not a number"),
    ("1,2,nan,40", "x2 is nan, not a finite number"),
    ("1,2,30,inf", "y2 is inf, not a finite number"),
    ("30,2,10,40", "the box (30,2,10,40) is empty or inverted"),
    ("10,5,10,40", "the box (10,5,10,40) is empty or inverted"),
])
def test_a_malformed_or_empty_box_is_refused_naming_the_field(given, words):
    with pytest.raises(BoxError) as caught:
        parse_box(given, "box")
    assert str(caught.value).startswith("box: ") and words in str(caught.value) and "\n" not in str(caught.value)


def test_a_box_reads_from_text_or_cells():
    assert parse_box(" 1, 2.5,30 ,40", "box") == (1.0, 2.5, 30.0, 40.0)
    assert parse_box(["1", "2", "30", "40"], "f:2") == (1.0, 2.0, 30.0, 40.0)


def test_the_crop_is_trainings_grown_by_the_margin_and_clamped(tmp_path):
    photo = tmp_path / "two_tone.png"
    two_tone_png(photo)
    plain = PREP.decode_crop(str(photo), (10, 20, 50, 60))
    assert plain[1] == (10, 20, 50, 60) and (plain[0] == PREP.resize_image(Image.open(photo).crop((10, 20, 50, 60)))).all()
    grown = dataclasses.replace(PREP, box_margin=0.25).decode_crop(str(photo), (10, 20, 50, 60))
    assert grown[1] == (0, 10, 60, 70)  # 10 pixels more on each side, clamped at the left border
    past = PREP.decode_crop(str(photo), (100, 50, 300, 200))
    assert past[1] == (100, 50, 120, 90)  # clamped to the 120x90 photo
    assert PREP.decode_crop(str(photo))[1] is None
    with pytest.raises(BoxError, match=r"lies outside the 120x90 image"):
        PREP.decode_crop(str(photo), (200, 100, 300, 200))


@pytest.mark.parametrize("margin", [0.0, 0.1])
def test_a_box_wider_than_a_float_holds_is_the_whole_photo(tmp_path, margin):
    """Finite corners whose width overflows to inf (a newcomer's ``box=-1e308,-1e308,1e308,1e308``): the crop is
    the whole photo, with or without a margin, never NaN (a 500 in Serve, a traceback in predict.py)."""
    photo = tmp_path / "two_tone.png"
    two_tone_png(photo)
    box = parse_box("-1e308,-1e308,1e308,1e308", "box")
    assert dataclasses.replace(PREP, box_margin=margin).decode_crop(str(photo), box)[1] == (0, 0, 120, 90)
    # one huge side: clamped there; a margin grows the box by a tenth of its (huge) size, so to the whole photo
    expected = (0, 10, 50, 90) if not margin else (0, 0, 120, 90)
    assert dataclasses.replace(PREP, box_margin=margin).decode_crop(str(photo), (-1e308, 10, 50, 1e308))[1] == expected
    with pytest.raises(BoxError, match=r"lies outside the 120x90 image"):
        dataclasses.replace(PREP, box_margin=margin).decode_crop(str(photo), (1e308, 0, 1.5e308, 50))


def test_the_protocol_decides_which_dataset_rows_are_cropped(tmp_path):
    from cars_ray.data.loading import decode_batch

    photo = tmp_path / "two_tone.png"
    two_tone_png(photo)
    rows = pd.DataFrame({"path": [str(photo)] * 2, "rel_path": ["a.png", "b.png"], "class_index": [0, 1],
                         "x1": [0.0, np.nan], "y1": [0.0, np.nan], "x2": [50.0, np.nan], "y2": [90.0, np.nan],
                         "row_id": [0, 1]})
    whole = PREP.decode(str(photo))
    red = PREP.decode(str(photo), (0, 0, 50, 90))
    boxed = decode_batch(rows, PREP)["image"]
    assert (boxed[0] == red).all() and (boxed[1] == whole).all()  # a row without a box is whole under either protocol
    unboxed = decode_batch(rows, dataclasses.replace(PREP, use_boxes=False))["image"]
    assert (unboxed[0] == whole).all() and (unboxed[1] == whole).all() and not (red == whole).all()
    assert dataclasses.replace(PREP, use_boxes=False).row_box(rows.iloc[0]) is None
    assert PREP.row_box(next(rows.itertuples())) == (0.0, 0.0, 50.0, 90.0)


def test_the_protocol_travels_with_the_preprocessing_and_the_config():
    assert (PREP.protocol, dataclasses.replace(PREP, use_boxes=False).protocol) == ("box crops", "whole images")
    older = {k: v for k, v in PREP.to_dict().items() if k != "use_boxes"}  # a checkpoint from before the field
    assert Preprocessing.from_dict(older, "old").use_boxes is True
    whole = dataclasses.replace(PREP, use_boxes=False)
    assert Preprocessing.from_dict(whole.to_dict(), "new") == whole
    cfg = load_config("configs/demo.yaml", ["data.use_boxes=false", "model.backbone=test_efficientnet"])
    assert cfg.data.use_boxes is False and Preprocessing.from_config(cfg).use_boxes is False
    assert load_config("configs/demo.yaml", []).data.use_boxes is True
    with pytest.raises(ConfigError, match="data.use_boxes must be true or false, got 'maybe'"):
        load_config("configs/demo.yaml", ["data.use_boxes=maybe"])


def test_the_training_run_says_its_protocol():
    from cars_ray.train.runner import protocol_line

    table = pd.DataFrame({"x1": [1.0, np.nan, 3.0], "y1": [1.0, np.nan, 3.0], "x2": [9.0, np.nan, 9.0],
                          "y2": [9.0, np.nan, 9.0]})
    assert protocol_line(PREP, table) == "protocol: box crops: 2 of 3 rows cropped to their box, 1 without one taken whole"
    assert protocol_line(dataclasses.replace(PREP, use_boxes=False), table) == (
        "protocol: whole images (data.use_boxes false): the boxes of 2 of 3 rows are not used")
    assert "the data has no boxes" in protocol_line(PREP, table.iloc[[1]])


def test_a_box_manifest_reads_paths_boxes_and_whole_photos(tmp_path):
    from cars_ray.evaluate.batch_predict import read_box_manifest

    manifest = tmp_path / "sub" / "boxes.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,x1,y1,x2,y2,note\nimgs\\a.jpg,1,2,30,40,x\n\n./b.jpg,,,,\nimgs/a.jpg,5,6,70,80\n",
                        encoding="utf-8")
    paths, boxes = read_box_manifest(str(manifest))
    folder = str(tmp_path / "sub")
    assert paths == [f"{folder}/imgs/a.jpg", f"{folder}/b.jpg", f"{folder}/imgs/a.jpg"]  # one photo, two cars
    assert boxes == [(1.0, 2.0, 30.0, 40.0), None, (5.0, 6.0, 70.0, 80.0)]


@pytest.mark.parametrize("text, message", [
    ("file,x1,y1,x2,y2\na.jpg,1,2,3,4\n", "{m}:1: the header must name path,x1,y1,x2,y2; it lacks path"),
    ("a.jpg,1,2,30,40\n", "{m}:1: the header must name path,x1,y1,x2,y2; it lacks path, x1, y1, x2, y2"),
    ("", "{m}:1: the header must name path,x1,y1,x2,y2; it lacks path, x1, y1, x2, y2"),
    ("path,x1,y1,x2,y2\n", "box manifest {m} lists no photos"),
    ("path,x1,y1,x2,y2\na.jpg,1,2,30,40\nb.jpg,1,2,x,40\n",
     "1 bad row(s) in the box manifest: {m}:3: x2 is 'x', not a number"),
    ("path,x1,y1,x2,y2\na.jpg,1,2,,40\nb.jpg,40,2,30,40\n,1,2,3,4\n",
     "3 bad row(s) in the box manifest: {m}:2: x2 is empty; give all four of x1,y1,x2,y2, or none for the whole "
     "photo; the other bad line(s): 3, 4"),
])
def test_a_bad_box_manifest_stops_naming_file_line_and_field(tmp_path, text, message):
    from cars_ray.evaluate.batch_predict import read_box_manifest

    manifest = tmp_path / "boxes.csv"
    manifest.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_box_manifest(str(manifest))
    assert str(caught.value) == message.format(m=manifest)


def multipart_body(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[str, bytes]:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def test_serve_reads_box_and_topk_from_the_query_or_the_form_once():
    from serve.app import UserInputError, multipart_files, one_setting, request_box

    content_type, body = multipart_body([("file", "a.jpg", b"jpeg"), ("box", None, b"1,2,30,40"), ("topk", None, b"3")])
    files, fields = multipart_files(content_type, body)
    assert files == [("a.jpg", b"jpeg")] and fields == {"box": ["1,2,30,40"], "topk": ["3"]}
    assert request_box(one_setting("box", [], fields)) == (1.0, 2.0, 30.0, 40.0)
    assert one_setting("topk", [], fields) == "3" and one_setting("topk", ["2"], {}) == "2"
    assert one_setting("box", [], {}) is None and request_box(None) is None
    for query, form, where in ((["2"], fields, "1 as query parameter and 1 as form field"),
                               (["2", "3"], {}, "2 as query parameter"), ([], {"topk": ["2", "2"]}, "2 as form field")):
        with pytest.raises(UserInputError, match=rf"^topk is given 2 times \({where}\); give it once$") as caught:
            one_setting("topk", query, form)
        assert caught.value.status == 422
    with pytest.raises(UserInputError, match=r"^box: x2 is 'b', not a number \(box=x1,y1,x2,y2 in pixels") as caught:
        request_box("1,2,b,4")
    assert caught.value.status == 422
