"""Inputs from the field (issues #21 and #26 rows 1-3): real-world files, names and annotations.

Every input is generated here. Each case asserts the right value (labels, counts, pixels), the exit
code and sentence where a pipeline refuses, that the inputs did not change, and that nothing of the
user's data was dropped without being counted and named. Most cases start no Ray: the layouts, the
decode and the split run in-process; the few that need Ray Data (inspect, crop, predict) share the
session's local Ray and are batched so each pipeline runs once.
"""

from __future__ import annotations

import io
import os
import resource
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from cars_ray.data.files import IMAGE_SUFFIXES, normalise_rel_path, parse_label
from cars_ray.data.images import EXIF_NOTE, MAX_ASPECT_RATIO, open_rgb, to_rgb
from cars_ray.data.layouts import read_dataset
from cars_ray.data.split import keep_copies_together, read_split_file
from cars_ray.errors import DataError, ImageError
from cars_ray.preprocessing import Preprocessing
from helpers.data import CLASS_NAMES, annotation_struct, make_boxed_images, make_image, meta_struct, write_names_csv
from helpers.entry_points import call_pipeline, tree_hash

# --------------------------------------------------------------------------- generated inputs


def grey_photo(size=(64, 48)) -> np.ndarray:
    """An 8-bit grey 'photo': a gradient with a bright block and noise (uint8, H x W)."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, size[0])[None, :] * np.ones((size[1], 1))
    x[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] = 230
    return np.clip(x + rng.integers(-20, 20, x.shape), 0, 255).astype(np.uint8)


def colour_photo(size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    pixels[10:30, 10:40] = (200, 30, 60)
    return Image.fromarray(pixels)


def exif_bytes(entries) -> bytes:
    """A big-endian EXIF block from (tag, type, count, value) entries; bytes values are stored raw."""
    body, extra = struct.pack(">H", len(entries)), b""
    data_offset = 8 + 2 + 12 * len(entries) + 4
    for tag, kind, count, value in entries:
        if isinstance(value, bytes) and len(value) > 4:
            body += struct.pack(">HHII", tag, kind, count, data_offset + len(extra))
            extra += value
        elif isinstance(value, bytes):
            body += struct.pack(">HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            body += struct.pack(">HHIHH", tag, kind, count, value, 0)
    return b"Exif\0\0MM\0\x2a" + struct.pack(">I", 8) + body + struct.pack(">I", 0) + extra


def malformed_exif_jpeg(path: Path, orientation: int = 6) -> None:
    """A JPEG whose EXIF gives Orientation and an XResolution (a number) holding text: Pillow's
    exif_transpose raises TypeError on it."""
    entries = [(0x0112, 3, 1, orientation), (0x011A, 2, 8, b"seventy\0")]
    path.parent.mkdir(parents=True, exist_ok=True)
    colour_photo((40, 20)).save(path, "JPEG", quality=95, exif=exif_bytes(entries))


def strip_png(width: int, height: int) -> bytes:
    """A tiny PNG of a huge strip (a few hundred bytes for millions of pixels)."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def tiny_preprocessing(mode="squash") -> Preprocessing:
    return Preprocessing(image_size=32, resize=36, crop_pct=0.9, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode=mode)


# --------------------------------------------------------------------------- #21 row 1: every PIL mode

GREY = grey_photo()


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


GREY_VARIANTS = {  # mode -> a file of the same grey photo in that mode (the value to expect is GREY)
    "I;16 (16-bit PNG)": lambda d: _save(Image.fromarray(GREY.astype(np.uint16) * 257), d / "g16.png"),
    "I;16B (big-endian TIFF)": lambda d: _save(Image.frombytes("I;16B", GREY.shape[::-1],
                                                              (GREY.astype(">u2") * 257).tobytes()), d / "g16b.tif"),
    "I (32-bit, 16-bit data)": lambda d: _save(Image.fromarray(GREY.astype(np.int32) * 257), d / "gi16.tif"),
    "I (32-bit, 8-bit data)": lambda d: _save(Image.fromarray(GREY.astype(np.int32)), d / "gi8.tif"),
    "F (0..1)": lambda d: _save(Image.fromarray(GREY.astype(np.float32) / 255), d / "gf.tif"),
    "F (0..255)": lambda d: _save(Image.fromarray(GREY.astype(np.float32)), d / "gf255.tif"),
    "L": lambda d: _save(Image.fromarray(GREY), d / "g8.png"),
    "LA (opaque)": lambda d: _save(Image.merge("LA", [Image.fromarray(GREY), Image.new("L", GREY.shape[::-1], 255)]),
                                   d / "gla.png"),
}


@pytest.mark.parametrize("variant", list(GREY_VARIANTS))
def test_every_grey_mode_decodes_to_the_same_photo(variant, tmp_path):
    path = GREY_VARIANTS[variant](tmp_path)
    with Image.open(path) as raw:
        stored_mode = raw.mode
    decoded = np.asarray(open_rgb(path)).astype(int)
    assert decoded.shape == GREY.shape + (3,), stored_mode
    assert np.abs(decoded - GREY.astype(int)[..., None]).max() <= 2, f"{variant} stored as {stored_mode}"


def test_16_bit_png_is_really_16_bit_and_decodes_like_the_8_bit_one(tmp_path):
    """The issue's case: the same photo as 8-bit and 16-bit grey PNG decodes alike through the model's decode
    (training, evaluation, predict) and Serve's decode, not 92% white."""
    eight = GREY_VARIANTS["L"](tmp_path)
    sixteen = GREY_VARIANTS["I;16 (16-bit PNG)"](tmp_path)
    with Image.open(sixteen) as raw:
        assert raw.mode.startswith("I;16")
    preprocessing = tiny_preprocessing()
    a, b = preprocessing.decode(str(eight)).astype(int), preprocessing.decode(str(sixteen)).astype(int)
    assert np.abs(a - b).max() <= 2
    assert (b == 255).mean() < 0.05  # the bug decoded about 92% of it as pure white
    serve_decode = _serve_decode()
    assert np.abs(serve_decode(sixteen.read_bytes(), preprocessing).astype(int) - a).max() <= 2


COLOUR = colour_photo()


@pytest.mark.parametrize("mode, tolerance", [("CMYK", 0), ("YCbCr", 3), ("LAB", 2), ("HSV", 2), ("RGBA", 0), ("RGBX", 0)])
def test_colour_modes_come_back_to_the_photo(mode, tolerance):
    """Pillow's own conversions (the 8-bit round trip of LAB and HSV loses a little: the mean error is bounded)."""
    if mode == "LAB":
        from PIL import ImageCms
        to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
        image = ImageCms.applyTransform(COLOUR, to_lab)
    else:
        image = COLOUR.convert(mode)
    assert image.mode == mode
    error = np.abs(np.asarray(to_rgb(image)).astype(int) - np.asarray(COLOUR).astype(int))
    assert error.mean() <= max(tolerance, 0.5) and np.percentile(error, 99) <= 8 * max(tolerance, 1)


def test_transparency_bilevel_and_palette(tmp_path):
    # P with a transparent palette entry: transparent pixels on white, the rest their palette colour.
    # PA (Pillow cannot save it; it arises in memory from GIF/PNG palettes with alpha): opaque PA is its palette.
    opaque = Image.fromarray(GREY).convert("P").convert("PA")
    assert opaque.mode == "PA" and np.abs(np.asarray(to_rgb(opaque)).astype(int) - GREY[..., None]).max() <= 2
    palette = Image.new("P", (4, 2))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putdata([0, 1, 1, 1, 0, 1, 1, 1])
    palette.info["transparency"] = 0
    _save(palette, tmp_path / "p.png")
    decoded = np.asarray(open_rgb(tmp_path / "p.png"))
    assert decoded[0, 0].tolist() == [255, 255, 255] and decoded[0, 1].tolist() == [255, 0, 0]
    # Mode 1: black stays black, white stays white.
    bilevel = Image.fromarray(GREY).convert("1")
    _save(bilevel, tmp_path / "b.png")
    decoded = np.asarray(open_rgb(tmp_path / "b.png"))
    assert set(np.unique(decoded)) <= {0, 255}
    assert (decoded[..., 0] == np.asarray(bilevel.convert("L"))).all()
    # LA with alpha 0: white, as every cut-out is composited.
    clear = Image.merge("LA", [Image.fromarray(GREY), Image.new("L", GREY.shape[::-1], 0)])
    _save(clear, tmp_path / "clear.png")
    assert (np.asarray(open_rgb(tmp_path / "clear.png")) == 255).all()


# --------------------------------------------------------------------------- #21 row 2: malformed EXIF


def test_malformed_exif_is_ignored_with_a_note(tmp_path):
    path = tmp_path / "bad_exif.jpg"
    malformed_exif_jpeg(path)
    image = open_rgb(path)
    assert image.size == (40, 20)  # orientation ignored: as stored, not turned
    assert "EXIF block unreadable" in image.info[EXIF_NOTE] and "orientation ignored" in image.info[EXIF_NOTE]
    assert tiny_preprocessing().decode(path.read_bytes()).shape == (36, 36, 3)  # predict's path
    assert _serve_decode()(path.read_bytes(), tiny_preprocessing()).shape == (36, 36, 3)  # Serve: a 200
    assert tiny_preprocessing().decode(str(path), box=(1, 1, 30, 15)).shape == (36, 36, 3)  # crop and training
    # A good EXIF orientation is still applied.
    good = tmp_path / "good.jpg"
    colour_photo((40, 20)).save(good, "JPEG", exif=exif_bytes([(0x0112, 3, 1, 6)]))
    turned = open_rgb(good)
    assert turned.size == (20, 40) and EXIF_NOTE not in turned.info


# --------------------------------------------------------------------------- #21 row 13: extreme aspect ratios


def _serve_decode():
    from serve.app import decode_upload

    return lambda data, preprocessing: decode_upload(data, preprocessing, max_pixels=89_478_485)[0]


@pytest.mark.parametrize("width, height", [(32000, 1), (1, 32000), (20_000_000, 1)])
def test_extreme_strip_is_refused_from_its_header_with_bounded_memory(width, height):
    from serve.app import UserInputError

    data = strip_png(width, height)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for mode in ("shorter", "squash"):
        with pytest.raises(ImageError, match=rf"extreme aspect ratio: {width}x{height} pixels is longer than "
                                             rf"{MAX_ASPECT_RATIO}:1"):
            tiny_preprocessing(mode).decode(data)
        with pytest.raises(UserInputError) as refused:  # Serve: a JSON 400, never a 500
            _serve_decode()(data, tiny_preprocessing(mode))
        assert refused.value.status == 400 and "extreme aspect ratio" in str(refused.value)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100


def test_long_image_under_the_limit_resizes_from_the_shorter_side_without_a_huge_intermediate():
    # 40:1 with the short side scaled to 36 px would be a 14,400 x 36 intermediate; the box resize makes 36 x 36.
    image = Image.fromarray(np.tile(np.linspace(0, 255, 3600, dtype=np.uint8), (90, 1)))
    strip = image.convert("RGB")
    decoded = tiny_preprocessing("shorter").resize_image(strip)
    assert decoded.shape == (36, 36, 3)
    centre = np.asarray(strip)[:, 1755:1845].mean()
    assert abs(decoded.mean() - centre) < 2  # the centre square of the strip, as shorter-side resizing means


# --------------------------------------------------------------------------- #21 row 3: literal paths before globs

ODD_NAMES = ["car [1].jpg", "star*.jpg", "what?.jpg", "-lead.jpg", "with space.jpg", "Citroën ç 車.jpg", "[ab].jpg"]


def test_an_existing_path_is_taken_literally_before_any_glob(tmp_path):
    from cars_ray.evaluate.batch_predict import expand_inputs

    for name in ODD_NAMES + ["a.jpg", "b.jpg", "1.jpg"]:
        make_image(tmp_path / name, (16, 12))
    for name in ODD_NAMES:
        assert expand_inputs([str(tmp_path / name)]) == [str(tmp_path / name)], name
        assert expand_inputs([str(tmp_path / "a.jpg"), str(tmp_path / name)]) == [str(tmp_path / "a.jpg"),
                                                                                 str(tmp_path / name)]
    # A glob that names no existing file still expands; one that matches nothing becomes an error row.
    assert expand_inputs([str(tmp_path / "?.jpg")]) == [str(tmp_path / n) for n in ("1.jpg", "a.jpg", "b.jpg")]
    assert expand_inputs([str(tmp_path / "none*.jpg")]) == [str(tmp_path / "none*.jpg")]


def test_a_leading_dash_file_is_an_input_not_an_option(tmp_path, monkeypatch):
    from helpers.entry_points import load_pipeline

    monkeypatch.chdir(tmp_path)
    make_image(tmp_path / "-lead.jpg", (16, 12))
    predict = load_pipeline("predict.py")
    argv = ["--checkpoint", "c", "--input", "a.jpg", "-lead.jpg", "--output", "o.csv", "--tta"]
    assert predict.literal_input_paths(argv) == ["--checkpoint", "c", "--input", "a.jpg", "./-lead.jpg",
                                                 "--output", "o.csv", "--tta"]


# --------------------------------------------------------------------------- #21 row 4 / #26 row 2: images not where listed


def write_devkit(root: Path, images: Path, count: int = 6) -> None:
    records = make_boxed_images(images, count, seed=4)
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", meta_struct())
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": annotation_struct(records)})
    (root / "cars_train").mkdir(exist_ok=True)


def test_devkit_unpacked_one_level_too_deep_names_the_folder(tmp_path):
    root = tmp_path / "dk"
    write_devkit(root, root / "cars_train" / "cars_train")
    before = tree_hash(root)
    code, out, err = call_pipeline("crop.py", "--root-dir", str(root), "--output-dir", str(tmp_path / "out"))
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        f"error: 6 of the 6 images listed in the devkit annotations of {root} are not on disk; they are one "
        f"level down, in {root / 'cars_train' / 'cars_train'} (unpack the archive one level up or point --root-dir there)")
    assert tree_hash(root) == before and not (tmp_path / "out").exists()


def test_most_images_missing_is_refused_a_few_are_named(tmp_path):
    root = tmp_path / "dk"
    write_devkit(root, root / "cars_train")
    for name in ("00001.jpg", "00002.jpg", "00003.jpg", "00004.jpg"):
        (root / "cars_train" / name).unlink()
    with pytest.raises(DataError, match=r"^4 of the 6 images listed in .* are not on disk; the first is .*00001.jpg$"):
        read_dataset(root)
    make_image(root / "cars_train" / "00001.jpg", (160, 120))
    make_image(root / "cars_train" / "00002.jpg", (160, 120))
    manifest = read_dataset(root)  # 2 of 6 missing: read, each missing one named
    assert len(manifest.table) == 4
    assert sorted(Path(p["path"]).name for p in manifest.problems) == ["00003.jpg", "00004.jpg"]


@pytest.mark.parametrize("written", ["imgs\\a{i}.jpg", "imgs/a{i}.jpg", ".\\imgs\\a{i}.jpg", "./imgs//a{i}.jpg"])
def test_backslash_is_a_separator_in_a_manifest(tmp_path, written):
    for i in range(3):
        make_image(tmp_path / "imgs" / f"a{i}.jpg", (16, 12))
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"{written.format(i=i)},{i + 1}\n" for i in range(3)))
    manifest = read_dataset(tmp_path / "m.csv")
    assert manifest.table.rel_path.tolist() == [f"imgs/a{i}.jpg" for i in range(3)]
    assert manifest.table.class_index.tolist() == [0, 1, 2] and not manifest.problems


def test_a_manifest_whose_images_are_all_missing_is_refused_before_ray(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"elsewhere\\a{i}.jpg,1\n" for i in range(6)))
    code, _, err = call_pipeline("crop.py", "--root-dir", str(tmp_path / "m.csv"), "--output-dir", str(tmp_path / "out"))
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: 6 of the 6 images listed in {tmp_path / 'm.csv'} are not on disk; "
                                            f"the first is {tmp_path / 'elsewhere' / 'a0.jpg'}")


# --------------------------------------------------------------------------- #21 rows 5, 6 and #26 row 1: labels


@pytest.mark.parametrize("spelling, expected", [
    ("3", 3), ("03", 3), ("3.0", 3), (" 3", 3), ("3. ", 3), ("+3", 3), ("3e0", 3),
    ("-1", None), ("", None), ("NaN", None), ("nan", None), ("?", None), ("NA", None), ("none", None),
    ("2.5", "2.5"), ("Alpha Sedan 2010", "Alpha Sedan 2010"), ("-2", -2), ("0", 0),
])
def test_label_spellings(spelling, expected):
    assert parse_label(spelling) == expected


def labelled_manifest(root: Path, labels: list[str], names: bool = False) -> Path:
    for i in range(len(labels)):
        make_image(root / "imgs" / f"{i:02d}.jpg", (16, 12), seed=i)
    if names:
        write_names_csv(root / "names.csv", [f"Car {i}" for i in range(1, 12)])
    (root / "m.csv").write_text("path,label\n" + "".join(f"imgs/{i:02d}.jpg,{label}\n" for i, label in enumerate(labels)))
    return root / "m.csv"


@pytest.mark.parametrize("box, sentence", [("1,1,nan,20", "m.csv:2: field 'x2' is 'nan', expected a finite number"),
                                           ("1,inf,30,20", "m.csv:2: field 'y1' is 'inf', expected a finite number")])
def test_a_box_corner_that_is_no_finite_number_is_refused(tmp_path, box, sentence):
    make_image(tmp_path / "a.jpg", (40, 30))
    (tmp_path / "m.csv").write_text(f"path,label,x1,y1,x2,y2\na.jpg,1,{box}\n")
    with pytest.raises(DataError, match=sentence):
        read_dataset(tmp_path / "m.csv")


def test_float_ids_are_numbers_not_text(tmp_path):
    path = labelled_manifest(tmp_path, [f"{i}.0" for i in range(1, 11)])
    manifest = read_dataset(path)
    assert manifest.table.class_index.tolist() == list(range(10))  # "10.0" is class 10, not class 2
    assert manifest.class_names == [f"class_{i}" for i in range(1, 11)]


def test_a_sentinel_row_leaves_the_column_numeric_and_is_named(tmp_path):
    """#26 row 1: ids 1, 2, 10, 11 (five images each) and one -1: every labelled row keeps its id."""
    labels = [str(c) for c in (1, 2, 10, 11) for _ in range(5)] + ["-1"]
    path = labelled_manifest(tmp_path / "in", labels)
    before = tree_hash(tmp_path / "in")
    code, out, err = call_pipeline("split.py", "--root-dir", str(path), "--out", str(tmp_path / "out" / "split.csv"))
    assert code == 0, err[-2000:]
    split = pd.read_csv(tmp_path / "out" / "split.csv")
    expected = {f"imgs/{i:02d}.jpg": int(label) for i, label in enumerate(labels) if label != "-1"}
    assert dict(zip(split.path, split.class_id)) == expected
    assert "note: 1 row(s) of m.csv have no label (empty, -1, NaN, ?): read as unlabelled (line(s) 22)" in out
    assert tree_hash(tmp_path / "in") == before


@pytest.mark.parametrize("sentinels", [["", "NaN"], ["?", "NA"], ["-1", "none"]])
def test_other_sentinels_are_unlabelled_and_counted(tmp_path, sentinels):
    path = labelled_manifest(tmp_path, ["1", "2", "3", *sentinels])
    manifest = read_dataset(path)
    assert manifest.table.class_index.tolist() == [0, 1, 2, -1, -1]
    assert manifest.notes == ["2 row(s) of m.csv have no label (empty, -1, NaN, ?): read as unlabelled (line(s) 5, 6)"]


@pytest.mark.parametrize("labels, names, sentence", [
    (["1", "2", "0"], False, "m.csv:4: class id 0 is below 1; class ids are 1-based as in the dataset"),
    (["0", "1", "2"], False, "m.csv:2: class id 0 is below 1; class ids are 1-based as in the dataset"),
    (["1", "-2", "2"], False, "m.csv:3: class id -2 is below 1; class ids are 1-based as in the dataset"),
    (["1", "2.5", "2"], False, "m.csv:3: label '2.5' is a number but not a whole class id"),
    (["1", "Foo", "2"], True, "m.csv:3: label 'Foo' is neither a whole class id nor a class name of"),
    (["1", "Foo", "2"], False, "m.csv:3: label 'Foo' is a class name but line 2 gives the class id 1"),
])
def test_bad_labels_are_refused_naming_the_line(tmp_path, labels, names, sentence):
    path = labelled_manifest(tmp_path, labels, names)
    before = tree_hash(tmp_path)
    code, out, err = call_pipeline("split.py", "--root-dir", str(path), "--out", str(tmp_path / "s.csv"))
    assert code == 2 and "Traceback" not in err
    assert sentence in err.strip().splitlines()[-1]
    assert tree_hash(tmp_path) == before and not (tmp_path / "s.csv").exists()


# --------------------------------------------------------------------------- #21 row 7: names compare after NFC + strip


def test_ids_and_known_names_mix_with_a_names_csv(tmp_path):
    path = labelled_manifest(tmp_path, ["1", " Car 2 ", "03", unicodedata.normalize("NFD", "Car 4")], names=True)
    assert read_dataset(path).table.class_index.tolist() == [0, 1, 2, 3]


def test_nfd_folder_matches_its_nfc_name(tmp_path):
    names = ["Citroën C6 Sedan 2011", " Škoda Octavia 2012 ", "Alpha Sedan 2010"]
    write_names_csv(tmp_path / "names.csv", names)
    for index, name in enumerate(names):
        for i in range(2):
            make_image(tmp_path / unicodedata.normalize("NFD", name.strip()) / f"{i}.jpg", (16, 12), seed=index)
    manifest = read_dataset(tmp_path)
    assert manifest.class_counts() == {name.strip(): 2 for name in names}
    assert sorted(manifest.table.class_index.tolist()) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("names", [["Citroën C6", unicodedata.normalize("NFD", "Citroën C6")], ["A B", " A B"],
                                   ["Ram C/V", "Ram C-V"]])
def test_two_class_names_of_one_spelling_are_refused(tmp_path, names):
    write_names_csv(tmp_path / "names.csv", names + ["Other"])
    make_image(tmp_path / "Other" / "a.jpg", (16, 12))
    with pytest.raises(DataError, match=r"\(id 1\) and .* \(id 2\) are one name or folder after Unicode NFC"):
        read_dataset(tmp_path)


def test_a_class_folder_matching_no_name_is_an_error(tmp_path):
    write_names_csv(tmp_path / "names.csv", ["Alpha Sedan 2010"])
    make_image(tmp_path / "Alpha Sedan 2010" / "a.jpg", (16, 12))
    make_image(tmp_path / "Beta SUV 2007" / "b.jpg", (16, 12))
    before = tree_hash(tmp_path)
    code, _, err = call_pipeline("split.py", "--root-dir", str(tmp_path), "--out", str(tmp_path.parent / "s.csv"))
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        f"error: class folder {tmp_path / 'Beta SUV 2007'} matches no class name of {tmp_path / 'names.csv'}")
    assert tree_hash(tmp_path) == before


# --------------------------------------------------------------------------- #21 rows 8, 12 and #26 row 3: what a scan reads


def test_every_extension_pillow_reads_in_any_case(tmp_path):
    assert set(IMAGE_SUFFIXES) <= set(Image.registered_extensions())
    spellings = [".jpg", ".JPG", ".jpeg", ".JPEG", ".jpe", ".JPE", ".jfif", ".JFIF", ".png", ".webp", ".bmp", ".gif",
                 ".tif", ".TIFF"]
    for i, suffix in enumerate(spellings):
        image = colour_photo((16, 12))
        fmt = Image.registered_extensions()[suffix.lower()]
        image.save(tmp_path / "Alpha" / f"{i:02d}{suffix}" if (tmp_path / "Alpha").is_dir()
                   else _mkdir(tmp_path / "Alpha") / f"{i:02d}{suffix}", fmt)
    (tmp_path / "Alpha" / "notes.txt").write_text("not an image")
    (tmp_path / "Alpha" / "photo.heic").write_bytes(b"\0" * 16)
    manifest = read_dataset(tmp_path)
    assert len(manifest.table) == len(spellings)
    assert all(open_rgb(p).size == (16, 12) for p in manifest.table.path)
    assert sorted(Path(item["path"]).name for item in manifest.ignored) == ["notes.txt", "photo.heic"]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def junk_dataset(root: Path) -> Path:
    for cls in ("Alpha", "Beta"):
        for i in range(3):
            make_image(root / cls / f"{i}.jpg", (16, 12), seed=i)
    make_image(root / ".ipynb_checkpoints" / "0-checkpoint.jpg", (16, 12))
    make_image(root / "__MACOSX" / "Alpha" / "._0.jpg", (16, 12))
    (root / "__MACOSX" / "x.jpg").write_bytes(b"junk")
    (root / ".DS_Store").write_bytes(b"\0Bud1")
    (root / "Alpha" / "._0.jpg").write_bytes(b"\0\5\26\7")
    (root / "Alpha" / "Thumbs.db").write_bytes(b"\0")
    (root / "Beta" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    make_image(root / "Beta" / ".ipynb_checkpoints" / "1-checkpoint.jpg", (16, 12))
    return root


def test_junk_and_dot_folders_are_ignored_and_counted(tmp_path):
    root = junk_dataset(tmp_path / "d")
    manifest = read_dataset(root)
    assert manifest.class_names == ["Alpha", "Beta"]  # .ipynb_checkpoints is no class 1
    assert manifest.table.class_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert sorted(Path(item["path"]).name for item in manifest.ignored) == [
        ".DS_Store", "._0.jpg", ".ipynb_checkpoints", ".ipynb_checkpoints", "Thumbs.db", "__MACOSX", "desktop.ini"]
    from cars_ray.evaluate.batch_predict import expand_inputs

    assert [Path(p).relative_to(root).as_posix() for p in expand_inputs([str(root)])] == [
        f"{c}/{i}.jpg" for c in ("Alpha", "Beta") for i in range(3)]


def test_predict_names_the_folder_entries_it_skips(tmp_path, capsys):
    from cars_ray.evaluate.batch_predict import expand_inputs

    root = junk_dataset(tmp_path / "d")
    (root / "Beta" / "notes.txt").write_text("x")
    assert len(expand_inputs([str(root)])) == 6
    out = capsys.readouterr().out
    assert out.startswith("note: 8 folder entr(ies) skipped (junk, hidden, or not one of .jpg")
    for name in (".DS_Store", ".ipynb_checkpoints", "__MACOSX", "Thumbs.db", "._0.jpg", "desktop.ini", "notes.txt"):
        assert name in out


@pytest.mark.parametrize("raw", [b"\xe9", b"\xff\xfe", b"\xc3\x28", b"\x80"])
def test_names_that_are_not_utf8_are_skipped_counted_and_named(tmp_path, raw):
    root = tmp_path / "d"
    for cls in ("Alpha", "Beta"):
        for i in range(2):
            make_image(root / cls / f"{i}.jpg", (16, 12), seed=i)
    bad_file = os.fsdecode(os.fsencode(str(root / "Alpha")) + b"/caf" + raw + b".jpg")
    bad_folder = os.fsdecode(os.fsencode(str(root)) + b"/Cl" + raw + b"o")
    colour_photo((16, 12)).save(bad_file, "JPEG")
    os.mkdir(bad_folder)
    colour_photo((16, 12)).save(os.path.join(bad_folder, "0.jpg"), "JPEG")
    before = tree_hash(root)
    code, out, err = call_pipeline("split.py", "--root-dir", str(root), "--out", str(tmp_path / "s.csv"), "--val", "0",
                                   "--test", "0")
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert "2 folder entr(ies) ignored:" in out
    shown = raw.decode("utf-8", "backslashreplace")
    assert f"Alpha/caf{shown}.jpg: file name is not valid UTF-8" in out and f"Cl{shown}o: file name is not valid UTF-8" in out
    assert len(pd.read_csv(tmp_path / "s.csv")) == 4
    assert tree_hash(root) == before


# --------------------------------------------------------------------------- #21 row 9: crop output names


def test_crop_output_names_are_unique_per_input():
    from cars_ray.data.crop import unique_names

    stems = ["A/car", "A/car", "A/car", "A/Car", "A/car_png", "B/car"]
    sources = ["car.jpg", "car.png", "car.jpg", "Car.JPEG", "car_png.jpg", "car.jpg"]
    assert unique_names(stems, [Path(s).suffix for s in sources], sources) == [
        "A/car.jpg", "A/car_png.jpg", "A/car_2.jpg", "A/Car_jpeg.jpg", "A/car_png_jpg.jpg", "B/car.jpg"]


# --------------------------------------------------------------------------- #21 rows 10, 11: duplicates and split files


def duplicates_dataset(root: Path) -> Path:
    """Alpha: 8 images, two of them byte-identical; Beta: 8 images, one a copy of an Alpha image."""
    for cls, seed in (("Alpha", 0), ("Beta", 10)):
        for i in range(8):
            make_image(root / cls / f"{i}.jpg", (16, 12), seed=seed + i)
    write_names_csv(root / "names.csv", ["Alpha", "Beta"])
    (root / "Alpha" / "3.jpg").write_bytes((root / "Alpha" / "0.jpg").read_bytes())
    (root / "Beta" / "3.jpg").write_bytes((root / "Alpha" / "1.jpg").read_bytes())
    return root


def test_split_keeps_copies_in_one_split_and_can_drop_them(tmp_path):
    root = duplicates_dataset(tmp_path / "d")
    before = tree_hash(root)
    for seed in range(4):
        out = tmp_path / f"s{seed}.csv"
        code, stdout, err = call_pipeline("split.py", "--root-dir", str(root), "--out", str(out), "--val", "0.25",
                                          "--test", "0.25", "--seed", str(seed))
        assert code == 0, err[-2000:]
        split = pd.read_csv(out).set_index("path").split
        assert split["Alpha/0.jpg"] == split["Alpha/3.jpg"] and split["Alpha/1.jpg"] == split["Beta/3.jpg"]
        assert len(split) == 16
        counts = pd.read_csv(out).groupby(["class_id", "split"]).size().to_dict()
        assert counts == {(c, s): n for c in (1, 2) for s, n in (("test", 2), ("train", 4), ("val", 2))}
    code, stdout, err = call_pipeline("split.py", "--root-dir", str(root), "--out", str(tmp_path / "dropped.csv"),
                                      "--drop-duplicates")
    assert code == 0, err[-2000:]
    assert "dropped 2 exact duplicate(s) of 2 image(s) (the first copy by path kept): Alpha/3.jpg, Beta/3.jpg" in stdout
    assert sorted(pd.read_csv(tmp_path / "dropped.csv").path) == [f"{c}/{i}.jpg" for c in ("Alpha", "Beta")
                                                                  for i in range(8) if (c, i) not in
                                                                  (("Alpha", 3), ("Beta", 3))]
    assert tree_hash(root) == before


def test_an_image_with_two_boxes_is_one_split_unit(tmp_path):
    from cars_ray.data.split import apply_split, stratified_split

    for i in range(10):
        make_image(tmp_path / f"{i}.jpg", (80, 60), seed=i)
    rows = [f"{i}.jpg,1,5,5,40,40" for i in range(10)] + ["3.jpg,1,20,20,70,50"]  # 3.jpg: a second car
    (tmp_path / "m.csv").write_text("path,label,x1,y1,x2,y2\n" + "\n".join(rows) + "\n")
    manifest = read_dataset(tmp_path / "m.csv")
    split = stratified_split(manifest, 0.2, 0.2, seed=0)
    assert len(split) == 10 and not split.path.duplicated().any()
    table = apply_split(manifest, split, "the split")
    assert len(table) == 11 and table[table.rel_path == "3.jpg"].split.nunique() == 1


@pytest.mark.parametrize("text, sentence", [
    ("class_id,class_name\n1,A\n2,B\n1,C\n", "names.csv:4: class id 1 is listed a second time"),
])
def test_names_csv_with_an_id_twice_is_refused(tmp_path, text, sentence):
    (tmp_path / "names.csv").write_text(text)
    make_image(tmp_path / "A" / "a.jpg", (16, 12))
    with pytest.raises(DataError, match=sentence):
        read_dataset(tmp_path)


def test_keep_copies_together_swaps_within_the_class():
    split = pd.DataFrame({"path": ["a", "b", "c", "d"], "class_id": [1, 1, 1, 1], "split": ["train", "test", "train", "val"]})
    moved, count = keep_copies_together(split, [["a", "b"]])
    assert count == 1 and moved.split.tolist() == ["train", "train", "test", "val"]  # c took b's place in test


@pytest.mark.parametrize("rows, sentence", [
    (["a.jpg,1,train", "b.jpg,1,val", "./a.jpg,1,test"], "s.csv:2 and {s}:4: a.jpg is listed in two splits (train, test)"),
    (["a.jpg,1,train", "b.jpg,1,val", "a.jpg,1,train"], "s.csv:2 and {s}:4: a.jpg is listed twice (train, train)"),
    (["A\\a.jpg,1,train", "A/a.jpg,1,val"], "s.csv:2 and {s}:3: A/a.jpg is listed in two splits (train, val)"),
])
def test_a_split_file_listing_a_path_twice_is_refused(tmp_path, rows, sentence):
    path = tmp_path / "s.csv"
    path.write_text("path,class_id,split\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as refused:
        read_split_file(str(path))
    assert str(refused.value) == f"{path}:" + sentence.format(s=path).split(":", 1)[1] + \
        "; a split file lists each image once"


def test_evaluation_inputs_with_a_doubled_split_row_stop_before_ray(tmp_path):
    root = duplicates_dataset(tmp_path / "d")
    split = tmp_path / "split.csv"
    split.write_text("path,class_id,split\nAlpha/0.jpg,1,train\nBeta/1.jpg,2,val\n./Alpha/0.jpg,1,test\n")
    before = tree_hash(root, split)
    code, _, err = call_pipeline("inspect_data.py", "--root-dir", str(root), "--split-file", str(split),
                                 "--output-dir", str(tmp_path / "i"))
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: {split}:2 and {split}:4: Alpha/0.jpg is listed in two splits "
                                            "(train, test); a split file lists each image once")
    assert tree_hash(root, split) == before and not (tmp_path / "i").exists()


def test_split_file_paths_are_normalised():
    assert normalise_rel_path(".\\A\\b.jpg") == "A/b.jpg" and normalise_rel_path("./A//b.jpg") == "A/b.jpg"


# --------------------------------------------------------------------------- pipelines that need Ray, batched


def test_inspect_lists_duplicates_junk_extensions_and_exif_notes(ray_local, tmp_path):
    """One inspect_data run over a dataset holding the kinds: exact copies (within a class, across classes,
    across the splits of a split file), junk entries, a file of another extension, a malformed EXIF."""
    root = duplicates_dataset(tmp_path / "d")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "Alpha" / ".DS_Store").write_bytes(b"\0")
    (root / "Beta" / "readme.txt").write_text("x")
    malformed_exif_jpeg(root / "Beta" / "exif.jpg")
    split = tmp_path / "split.csv"
    split.write_text("path,class_id,split\nAlpha/0.jpg,1,train\nAlpha/3.jpg,1,test\nAlpha/1.jpg,1,train\n"
                     "Beta/3.jpg,2,train\n")
    before = tree_hash(root, split)
    code, out, err = call_pipeline("inspect_data.py", "--root-dir", str(root), "--output-dir", str(tmp_path / "i"),
                                   "--split-file", str(split))
    assert code == 0, err[-3000:]
    import json

    report = json.loads((tmp_path / "i" / "inspect.json").read_text())
    groups = {tuple(Path(p).relative_to(root).as_posix() for p in g["paths"]): g for g in report["duplicates"]}
    assert set(groups) == {("Alpha/0.jpg", "Alpha/3.jpg"), ("Alpha/1.jpg", "Beta/3.jpg")}
    assert groups[("Alpha/0.jpg", "Alpha/3.jpg")]["kinds"] == ["within a class", "across splits"]
    assert groups[("Alpha/1.jpg", "Beta/3.jpg")]["kinds"] == ["across classes"]
    assert report["duplicate_counts"] == {"within a class": 1, "across classes": 1, "across splits": 1}
    assert "duplicates  : 2 group(s) of exact copies (4 files; 1 within a class, 1 across classes, 1 across splits)" in out
    assert sorted(Path(i["path"]).name for i in report["ignored"]) == [".DS_Store", ".ipynb_checkpoints", "readme.txt"]
    assert "ignored     : 3 folder entr(ies)" in out
    assert [Path(n["path"]).name for n in report["image_notes"]] == ["exif.jpg"]
    assert report["num_readable"] == 17 and tree_hash(root, split) == before


def test_crop_keeps_every_input_and_counts_agree(ray_local, tmp_path):
    """car.jpg and car.png (different photos), a file listed with two boxes, a malformed EXIF, a missing file:
    every crop is its own file, written equals the files on disk, crops.csv has no repeated path, and the
    report's skipped count equals its list."""
    root = tmp_path / "m"
    for name, seed in (("car.jpg", 1), ("car.png", 2), ("other.jpg", 3), ("x.jpg", 4)):
        colour_photo((60, 40)).rotate(seed * 90, expand=True).save(root / name if root.is_dir() else _mkdir(root) / name)
    malformed_exif_jpeg(root / "exif.jpg")
    write_names_csv(root / "names.csv", ["Alpha", "Beta"])
    (root / "m.csv").write_text("path,label,x1,y1,x2,y2\ncar.jpg,1,1,1,30,20\ncar.png,1,1,1,30,20\n"
                                "other.jpg,2,1,1,30,20\nother.jpg,2,5,5,35,25\nexif.jpg,2,1,1,30,15\nx.jpg,1,1,1,30,20\n"
                                "gone.jpg,1,1,1,30,20\n")
    before = tree_hash(root)
    code, out, err = call_pipeline("crop.py", "--root-dir", str(root / "m.csv"), "--output-dir", str(tmp_path / "o"))
    assert code == 0, err[-3000:]
    import json

    report = json.loads((tmp_path / "o" / "crop_report.json").read_text())
    on_disk = sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*.jpg"))
    assert on_disk == ["Alpha/car.jpg", "Alpha/car_png.jpg", "Alpha/x.jpg", "Beta/exif.jpg", "Beta/other.jpg",
                       "Beta/other_2.jpg"]
    assert report["written"] == len(on_disk) == 6
    crops = pd.read_csv(tmp_path / "o" / "crops.csv")
    assert sorted(crops.path) == on_disk and not crops.path.duplicated().any()
    assert report["skipped"] == len(report["skipped_items"]) == 1
    assert report["skipped_items"][0]["path"].endswith("gone.jpg")
    assert [Path(n["path"]).name for n in report["notes"]] == ["exif.jpg"]
    assert "skipped 1 (0 while cropping, 1 while reading the annotations)" in out
    assert tree_hash(root) == before


def test_predict_answers_every_field_input(ray_local, tmp_path, monkeypatch):
    """predict.py over the field's files: 8-bit and 16-bit grey of one photo get the same answer; a malformed
    EXIF, glob characters, a leading dash and non-ASCII are read; a strip is an error row; nothing stops the run."""
    from helpers.data import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "c")
    photos = _mkdir(tmp_path / "in")
    big = np.kron(GREY, np.ones((2, 2), np.uint8))  # 128 x 96, so both decode through the same resize
    Image.fromarray(big).save(photos / "grey8.png")
    Image.fromarray(big.astype(np.uint16) * 257).save(photos / "grey16.png")
    malformed_exif_jpeg(photos / "exif.jpg")
    for name in ("car [1].jpg", "-lead.jpg", "Citroën 車.jpg"):
        make_image(photos / name, (64, 48))
    (photos / "strip.png").write_bytes(strip_png(32000, 1))
    before = tree_hash(photos)
    inputs = [str(photos / n) for n in ("grey8.png", "grey16.png", "exif.jpg", "car [1].jpg", "Citroën 車.jpg",
                                        "strip.png")]
    monkeypatch.chdir(photos)  # "-lead.jpg" as a user types it: argparse alone would take it for an option
    code, out, err = call_pipeline("predict.py", "--checkpoint", str(checkpoint), "--input", *inputs,
                                   "-lead.jpg", "--output", str(tmp_path / "p.csv"))
    assert code == 0 and "Traceback" not in err, err[-3000:]
    frame = pd.read_csv(tmp_path / "p.csv", keep_default_na=False).set_index("path")
    assert list(frame.index) == inputs + ["./-lead.jpg"]
    assert frame.class_id[inputs[0]] == frame.class_id[inputs[1]]
    assert abs(float(frame.probability[inputs[0]]) - float(frame.probability[inputs[1]])) < 0.01
    assert frame.error[inputs[5]].startswith("extreme aspect ratio: 32000x1 pixels")
    assert (frame.error[inputs[:5]] == "").all() and frame.error["./-lead.jpg"] == ""
    assert tree_hash(photos) == before


def test_evaluation_names_the_images_it_could_not_score(ray_local, tmp_path):
    from helpers.data import folder_of, write_class_folders, write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "c")
    root = write_class_folders(tmp_path / "d", 2, (48, 40))
    broken = root / folder_of(CLASS_NAMES[1]) / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    before = tree_hash(root)
    code, out, err = call_pipeline("evaluate.py", "--checkpoint", str(checkpoint), "--root-dir", str(root),
                                   "--output-dir", str(tmp_path / "ev"))
    assert code == 0, err[-3000:]
    import json

    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    rel = f"{folder_of(CLASS_NAMES[1])}/broken.jpg"
    assert metrics["num_listed"] == 9 and metrics["num_images"] == 8 and metrics["not_scored"] == [rel]
    assert f"warning: 1 of 9 images could not be decoded and are not scored (listed in metrics.json): {rel}" in out
    assert tree_hash(root) == before


def test_duplicates_name_each_files_classes_and_every_kind_of_a_group(tmp_path):
    """A group of three copies (two of one class, one of another) is within a class AND across classes; an
    image listed twice (two boxes, two classes) is one file, never a copy of itself, and keeps both classes."""
    from cars_ray.data.files import content_hash
    from cars_ray.data.inspection import find_duplicates

    make_image(tmp_path / "a.jpg", (60, 40), seed=1)
    for name in ("b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes((tmp_path / "a.jpg").read_bytes())
    make_image(tmp_path / "d.jpg", (60, 40), seed=2)
    write_names_csv(tmp_path / "names.csv")
    (tmp_path / "m.csv").write_text("path,label,x1,y1,x2,y2\na.jpg,1,1,1,30,30\nb.jpg,1,1,1,30,30\nc.jpg,2,1,1,30,30\n"
                                    "d.jpg,1,1,1,30,30\nd.jpg,2,5,5,40,30\n")
    manifest = read_dataset(tmp_path / "m.csv")
    paths = sorted(set(manifest.table.path))
    checked = pd.DataFrame({"path": paths, "sha256": [content_hash(p) for p in paths]})
    groups = find_duplicates(manifest, checked)
    assert [[os.path.basename(p) for p in g["paths"]] for g in groups] == [["a.jpg", "b.jpg", "c.jpg"]]
    assert groups[0]["classes"] == [CLASS_NAMES[0], CLASS_NAMES[0], CLASS_NAMES[1]]
    assert groups[0]["kinds"] == ["within a class", "across classes"]


def test_inspect_names_split_rows_that_name_no_image():
    from cars_ray.data.inspection import format_summary

    report = {"layout": "folder", "root": "/d", "num_classes": 1, "num_images": 1, "num_labelled": 1, "num_with_boxes": 0,
              "original_splits": {"none": 1}, "per_class": {"A": 1}, "per_class_stats": {"min": 1, "median": 1.0, "max": 1},
              "image_size": None, "notes": [], "problems": [], "problem_counts": {}, "image_notes": [], "ignored": [],
              "duplicates": [], "duplicate_counts": {"within a class": 0, "across classes": 0, "across splits": 0},
              "split_rows_naming_no_image": ["A/nonexistent.jpg"]}
    lines = format_summary(report).splitlines()
    assert "split file  : 1 row(s) name no image of this dataset" in lines and "  - A/nonexistent.jpg" in lines
