"""The frame of a box (#28.2): stored pixels (Stanford Cars', the default) or upright, read the same way by crop,
inspect, training's decode and evaluation; a box reaching past its image is clamped, counted and named.

Each photo is stored 400x300 with a red box region on blue, and an EXIF Orientation tag: shown upright it
is 300x400 (orientations 6 and 8) or 400x300 (1, 3).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers.entry_points import call_pipeline
from cars_ray.data.crop import crop_one
from cars_ray.data.images import box_on_upright, stored_to_upright
from cars_ray.data.inspection import check_batch
from cars_ray.preprocessing import Preprocessing

STORED_SIZE = (400, 300)
STORED_BOX = (40, 60, 200, 150)  # x1, y1, x2, y2 in the stored pixels


def rotated_photo(path, orientation: int, box=STORED_BOX) -> None:
    image = Image.new("RGB", STORED_SIZE, (20, 40, 200))
    image.paste((230, 20, 20), box)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, format="JPEG", quality=95, exif=exif.tobytes())


def red_box_upright(path) -> tuple[int, int, int, int]:
    """Where the red region is on the photo shown upright (PIL's own exif_transpose), found from its pixels."""
    pixels = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).astype(int)
    ys, xs = np.nonzero((pixels[..., 0] > 150) & (pixels[..., 2] < 100))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def redness(array: np.ndarray) -> float:
    """The share of red pixels."""
    array = array.astype(int)
    return float(((array[..., 0] > 150) & (array[..., 2] < 100)).mean())


def row_of(path, box) -> dict:
    return {"path": str(path), "x1": float(box[0]), "y1": float(box[1]), "x2": float(box[2]), "y2": float(box[3])}


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_stored_and_upright_boxes_crop_the_same_region(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    rotated_photo(path, orientation)
    upright_box = red_box_upright(path)
    width, height = (300, 400) if orientation in (6, 8) else (400, 300)
    assert stored_to_upright(STORED_BOX, orientation, *STORED_SIZE) == pytest.approx(upright_box, abs=1)
    expected_size = (upright_box[2] - upright_box[0], upright_box[3] - upright_box[1])  # (90, 160) turned, else (160, 90)
    for frame, box in (("stored", STORED_BOX), ("upright", upright_box)):
        status, reason, encoded, clamped = crop_one(row_of(path, box), 0.0, frame)
        crop = Image.open(io.BytesIO(encoded))
        assert (status, reason, clamped) == ("cropped", "", "") and crop.size == pytest.approx(expected_size, abs=1)
        assert redness(np.asarray(crop)) > 0.95, (frame, orientation)
        decoded = Preprocessing(image_size=32, resize=32, crop_pct=1.0, mean=(0.5,) * 3, std=(0.5,) * 3,
                                box_frame=frame).decode(str(path), box)
        assert decoded.shape == (32, 32, 3) and redness(decoded) > 0.95, (frame, orientation)
    if orientation in (6, 8):  # the stored box read as upright misses the region: the two frames differ
        _, _, encoded, _ = crop_one(row_of(path, STORED_BOX), 0.0, "upright")
        assert redness(np.asarray(Image.open(io.BytesIO(encoded)))) < 0.5


@pytest.mark.parametrize("orientation", [6, 8])
def test_inspect_checks_a_box_in_the_frame_crop_reads_it_in(tmp_path, orientation):
    """A stored box past the upright width (x2 390 > 300): fine in the stored frame, outside in the upright one."""
    path = tmp_path / f"wide{orientation}.jpg"
    box = (250, 20, 390, 100)
    rotated_photo(path, orientation, box)
    import pandas as pd

    batch = pd.DataFrame([row_of(path, box)])
    assert check_batch(batch, "stored").reason.tolist() == [""]
    assert crop_one(row_of(path, box), 0.0, "stored")[3] == ""
    upright = check_batch(batch, "upright").reason.iloc[0]
    assert upright == "box outside the image: (250,20,390,100) on 300x400 in the upright frame"
    assert crop_one(row_of(path, box), 0.0, "upright")[3].startswith("box clamped: (250,20,390,100) on 300x400 in the "
                                                                      "upright frame reaches past the image; cropped to 50x80")


def test_a_clamped_box_is_counted_and_named_never_silently_shrunk(tmp_path):
    crop, note = box_on_upright((350, 250, 420, 320), "stored", 6, 300, 400)
    assert note == ("box clamped: (350,250,420,320) on 400x300 in the stored frame (EXIF orientation 6) reaches past "
                    "the image; cropped to 50x50")
    assert crop == (0, 350, 50, 400)
    assert box_on_upright((10, 10, 401, 301), "stored", 1, 400, 300)[1] is None  # 1-based inclusive: x2 = width + 1


def test_crop_pipeline_reads_the_box_frame_and_reports_clamped_boxes(ray_local, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rotated_photo(data / "a.jpg", 6)
    rotated_photo(data / "b.jpg", 8)
    rotated_photo(data / "c.jpg", 1, (350, 250, 400, 300))
    (data / "names.csv").write_text("class_id,class_name\n1,Alpha Sedan 2010\n")
    (data / "m.csv").write_text("path,label,x1,y1,x2,y2\n" + "".join(
        f"{name},1,{x1},{y1},{x2},{y2}\n" for name, (x1, y1, x2, y2) in
        (("a.jpg", STORED_BOX), ("b.jpg", STORED_BOX), ("c.jpg", (350, 250, 420, 320)))))
    code, stdout, stderr = call_pipeline("crop.py", "--root-dir", str(data / "m.csv"), "--output-dir", str(tmp_path / "o"))
    assert code == 0, stderr[-2000:]
    report = json.loads((tmp_path / "o" / "crop_report.json").read_text())
    assert (report["box_frame"], report["written"], report["clamped"]) == ("stored", 3, 1)
    assert report["clamped_items"] == [{"path": str(data / "c.jpg"), "reason": "box clamped: (350,250,420,320) on "
                                        "400x300 in the stored frame reaches past the image; cropped to 50x50"}]
    assert "written 3 (of which 1 from boxes clamped to the image)" in stdout
    assert f"  clamped {data / 'c.jpg'}: box clamped: (350,250,420,320)" in stdout
    for name in ("a", "b"):
        crop = Image.open(tmp_path / "o" / "Alpha Sedan 2010" / f"{name}.jpg")
        assert crop.size == (90, 160) and redness(np.asarray(crop)) > 0.95
    code, _, stderr = call_pipeline("crop.py", "--root-dir", str(data / "m.csv"), "--output-dir", str(tmp_path / "u"),
                                    "--box-frame", "upright")
    assert code == 0, stderr[-2000:]
    assert json.loads((tmp_path / "u" / "crop_report.json").read_text())["box_frame"] == "upright"
    assert redness(np.asarray(Image.open(tmp_path / "u" / "Alpha Sedan 2010" / "a.jpg"))) < 0.5
