"""Read Stanford Cars in each layout people have into one :class:`Manifest`.

Layouts (``detect_layout`` picks one when asked for ``auto``):

- ``devkit``: ``cars_train/``, ``cars_test/`` and the devkit ``.mat`` files, in ``devkit/`` or
  beside the image folders, optionally under torchvision's ``stanford_cars/`` parent;
- ``kaggle``: ``car_data/car_data/{train,test}/<class>/`` (or one ``car_data`` level) with
  ``anno_train.csv``, ``anno_test.csv`` and ``names.csv``, with or without header rows;
- ``car_ims``: the full release, ``car_ims/`` with ``cars_annos.mat`` and ``cars_meta.mat``;
- ``folder``: ``<root>/<class>/<image>``, already cropped;
- ``csv``: a manifest file ``path,label[,x1,y1,x2,y2][,split]``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import scipy.io

from cars_ray.config import DEMO_ROOT
from cars_ray.data.files import (IMAGE_SUFFIXES, looks_numeric, normalise_name, normalise_rel_path, parse_label,
                                 scan_folder)
from cars_ray.data.images import BOX_FIELDS
from cars_ray.data.manifest import UNLABELLED, Manifest, folder_to_class_index, make_table
from cars_ray.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "LAYOUTS", "read_dataset", "detect_layout", "read_names_csv"]

LAYOUTS = ("devkit", "kaggle", "car_ims", "folder", "csv")


def resolve_root(root_dir: str | os.PathLike) -> str:
    """``demo`` names the sample shipped inside the package (configs, --root-dir, --input); anything else
    is a path. The one place that says so: every reader of a dataset root goes through it."""
    if str(root_dir) == DEMO_ROOT:
        return str(resources.files("cars_ray").joinpath("data/demo/images"))
    return str(root_dir)


def read_dataset(root: str | os.PathLike, layout: str = "auto") -> Manifest:
    """Read the dataset at ``root`` (a folder, a CSV manifest file, or ``demo``) into a manifest."""
    root_path = Path(resolve_root(root)).expanduser().absolute()
    if not root_path.exists():
        raise DataError(f"dataset root {root_path} does not exist")
    if layout == "auto":
        layout = detect_layout(root_path)
    if layout not in READERS:
        raise DataError(f"unknown layout {layout!r}; expected one of: auto, {', '.join(LAYOUTS)}")
    return READERS[layout](root_path)


def detect_layout(root: Path) -> str:
    """Name the layout found at ``root``, or fail saying what each layout looks for."""
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "csv"
        raise DataError(f"{root} is a file but not a .csv manifest")
    if _find_car_ims(root):
        return "car_ims"
    if _find_devkit(root):
        return "devkit"
    if _find_kaggle(root):
        return "kaggle"
    if _class_folders(root):
        return "folder"
    raise DataError(
        f"no known dataset layout in {root}: looked for car_ims/ with cars_annos.mat (car_ims), "
        "cars_train/ or cars_test/ with devkit/cars_meta.mat (devkit), car_data/[car_data/]train|test "
        "with names.csv (kaggle), <class>/<image> folders (folder), or a .csv manifest file (csv)"
    )


# ----------------------------------------------------------------------------- helpers


def _class_folders(root: Path, ignored: list[dict] | None = None) -> list[Path]:
    """Sub-folders of root that hold at least one image file directly (junk and dot-folders never do).

    With ``ignored``, what the scan of root left out (junk, hidden, not UTF-8) is appended to it.
    """
    if not root.is_dir():
        return []
    scan = scan_folder(root)
    if ignored is not None:
        ignored += scan.ignored
    return [folder for folder in scan.folders if scan_folder(folder).images]


def _class_images(folder: Path, ignored: list[dict]) -> list[Path]:
    """The images of one class folder; every other entry (junk, other extensions, sub-folders) goes to ``ignored``."""
    scan = scan_folder(folder)
    ignored += scan.ignored + scan.not_images
    ignored += [{"path": str(sub), "reason": "a folder inside a class folder is not read"} for sub in scan.folders]
    return scan.images


def _class_of_folder(folder: Path, by_folder: dict[str, int], names_source: str) -> int:
    """The class index of a class folder; a folder that matches no class name is an error, never a silent drop."""
    index = by_folder.get(normalise_name(folder.name))
    if index is None:
        raise DataError(f"class folder {folder} matches no class name of {names_source} (names are compared "
                        "after Unicode NFC normalisation and stripping spaces); rename the folder or add the class")
    return index


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a CSV file, skipping blank lines."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            for line_no, fields in enumerate(csv.reader(handle), start=1):
                if fields and any(f.strip() for f in fields):
                    yield line_no, [f.strip() for f in fields]
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not a UTF-8 text CSV file ({err.reason})") from None


def _number(value: str, path: Path, line_no: int, field_name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{path}:{line_no}: field {field_name!r} is {value!r}, expected a number") from None
    if not np.isfinite(number):  # a NaN box corner would fail deep inside a crop task
        raise DataError(f"{path}:{line_no}: field {field_name!r} is {value!r}, expected a finite number")
    return number


def _class_id(value: str, path: Path, line_no: int, field_name: str) -> int:
    number = _number(value, path, line_no, field_name)
    if not np.isfinite(number) or number != int(number):  # int(nan) and int(inf) would raise
        raise DataError(f"{path}:{line_no}: field {field_name!r} is {value!r}, expected a whole class id")
    return int(number)


def read_names_csv(path: Path) -> list[str]:
    """Class names from a Kaggle-style names.csv: ``class_id,class_name`` or one name per line."""
    names: dict[int, str] = {}
    ordered: list[str] = []
    for line_no, fields in _csv_rows(path):
        if len(fields) >= 2 and fields[0].lstrip("-").isdigit():
            if int(fields[0]) in names:
                raise DataError(f"{path}:{line_no}: class id {int(fields[0])} is listed a second time")
            names[int(fields[0])] = ",".join(fields[1:])
        elif line_no == 1 and len(fields) >= 2:
            continue  # header row such as "class_id,class_name"
        elif len(fields) >= 1 and not names:
            ordered.append(",".join(fields))  # Kaggle's original: one name per line, no ids
        else:
            raise DataError(f"{path}:{line_no}: expected 'class_id,class_name', got {','.join(fields)!r}")
    if names:
        ids = sorted(names)
        if ids != list(range(1, len(ids) + 1)):
            raise DataError(f"{path}: class ids must run 1..N without gaps, got {ids[:3]}..{ids[-1]}")
        return [names[i] for i in ids]
    if ordered and ordered[0].lower() in {"class_name", "name", "class"}:
        ordered = ordered[1:]
    if not ordered:
        raise DataError(f"{path} lists no class names")
    return ordered


def read_meta_mat(path: Path) -> list[str]:
    """Class names from a devkit ``cars_meta.mat`` (field ``class_names``)."""
    mat = _load_mat(path)
    if "class_names" not in mat:
        raise DataError(f"{path} has no 'class_names' field")
    return [str(name) for name in np.atleast_1d(mat["class_names"])]


def _load_mat(path: Path) -> dict:
    try:
        return scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as err:  # scipy raises several unrelated types for a bad file
        raise DataError(f"{path} is not a readable MATLAB .mat file ({err})") from None


def _mat_annotations(path: Path, required: tuple[str, ...]) -> list:
    mat = _load_mat(path)
    if "annotations" not in mat:
        raise DataError(f"{path} has no 'annotations' struct array")
    annotations = list(np.atleast_1d(mat["annotations"]))
    for index, record in enumerate(annotations, start=1):
        missing = [name for name in required if not hasattr(record, name)]
        if missing:
            raise DataError(f"{path}: annotation {index} lacks field(s) {', '.join(missing)}")
    return annotations


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


@dataclass
class _RowMaker:
    """Makes manifest rows for a dataset of ``num_classes`` classes, recording unknown class ids as problems."""

    num_classes: int
    problems: list

    def row(self, path: Path, rel_path: str, class_id: int | None, box, split: str, source: str) -> dict | None:
        """A manifest row, or None (with a problem recorded) for an unknown class id."""
        if class_id is not None and not 1 <= class_id <= self.num_classes:
            self.problems.append({"path": str(path), "reason": f"unknown class id {class_id}", "source": source})
            return None
        x1, y1, x2, y2 = box if box is not None else (np.nan,) * 4
        return {
            "path": str(path), "rel_path": rel_path,
            "class_index": class_id - 1 if class_id is not None else UNLABELLED,
            "x1": x1, "y1": y1, "x2": x2, "y2": y2, "orig_split": split,
        }


def _check_missing(rows: list[dict], problems: list, source_of: Callable[[dict], str], listing: str) -> list[dict]:
    """Drop rows whose image is not on disk, recording each as a problem.

    When none or most (more than half) of the listed images are missing, the dataset is not where
    ``listing`` (the annotation file or manifest) says: raise DataError in one sentence, naming the
    folder one level down where the images were found, if they were.
    """
    kept, missing = [], []
    for row in rows:
        if os.path.exists(row["path"]):
            kept.append(row)
        else:
            missing.append(row["path"])
            problems.append({"path": row["path"], "reason": "missing: annotated image is not on disk",
                             "source": source_of(row)})
    if missing and len(missing) * 2 > len(rows):
        hint = _found_elsewhere(missing)
        where = (f"; they are one level down, in {hint} (unpack the archive one level up or point --root-dir there)"
                 if hint else f"; the first is {missing[0]}")
        raise DataError(f"{len(missing)} of the {len(rows)} images listed in {listing} are not on disk{where}")
    return kept


def _found_elsewhere(missing: list[str], tries: int = 5) -> Path | None:
    """The folder one level below where a missing image's path points (cars_train/cars_train/), if it is there."""
    for text in missing[:tries]:
        path = Path(text)
        base = path.parent
        while not base.is_dir() and base != base.parent:
            base = base.parent
        rest = path.relative_to(base)
        for sub in sorted(p for p in base.iterdir() if p.is_dir()):
            for candidate in (sub / rest, sub / path.name):
                if candidate.is_file():
                    return candidate.parent
    return None


# ----------------------------------------------------------------------------- devkit


def _find_devkit(root: Path) -> tuple[Path, Path] | None:
    """(image parent, devkit folder) of a devkit layout under root, if any."""
    for base in (root, root / "stanford_cars"):
        if not ((base / "cars_train").is_dir() or (base / "cars_test").is_dir()):
            continue
        for devkit in (base / "devkit", base):
            if (devkit / "cars_meta.mat").exists():
                return base, devkit
    return None


def read_devkit(root: Path) -> Manifest:
    found = _find_devkit(root)
    if not found:
        raise DataError(
            f"devkit layout not found in {root}: need cars_train/ or cars_test/ and cars_meta.mat "
            "in devkit/ or beside them (optionally under stanford_cars/)"
        )
    base, devkit = found
    class_names = read_meta_mat(devkit / "cars_meta.mat")
    rows: list[dict] = []
    problems: list[dict] = []
    notes: list[str] = []
    make_row = _RowMaker(len(class_names), problems).row
    for split, folder, anno_names in (
        ("train", "cars_train", ["cars_train_annos.mat"]),
        ("test", "cars_test", ["cars_test_annos_withlabels.mat", "cars_test_annos.mat"]),
    ):
        anno = _first_existing([d / n for n in anno_names for d in (devkit, base)])
        if anno is None:
            if (base / folder).is_dir():
                raise DataError(f"{base / folder} exists but none of {', '.join(anno_names)} was found in {devkit}")
            continue
        records = _mat_annotations(anno, ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "fname"))
        labelled = hasattr(records[0], "class") if records else True
        if not labelled:
            notes.append(f"{anno.name} has no 'class' field: its {len(records)} {split} images are read as unlabelled")
        for index, rec in enumerate(records, start=1):
            box = (float(rec.bbox_x1), float(rec.bbox_y1), float(rec.bbox_x2), float(rec.bbox_y2))
            class_id = int(getattr(rec, "class")) if labelled else None
            path = base / folder / str(rec.fname)
            row = make_row(path, f"{folder}/{rec.fname}", class_id, box, split, f"{anno.name}:{index}")
            if row:
                row["_source"] = f"{anno.name}:{index}"
                rows.append(row)
    rows = _check_missing(rows, problems, lambda r: r["_source"], f"the devkit annotations of {base}")
    for row in rows:
        row.pop("_source")
    return Manifest(make_table(rows), class_names, "devkit", str(base), notes, problems)


# ----------------------------------------------------------------------------- car_ims


def _find_car_ims(root: Path) -> Path | None:
    for base in (root, root / "stanford_cars"):
        if (base / "car_ims").is_dir() and (base / "cars_annos.mat").exists():
            return base
    return None


def read_car_ims(root: Path) -> Manifest:
    base = _find_car_ims(root)
    if base is None:
        raise DataError(f"car_ims layout not found in {root}: need car_ims/ and cars_annos.mat")
    meta = _first_existing([base / "cars_meta.mat", base / "devkit" / "cars_meta.mat"])
    if meta is not None:
        class_names = read_meta_mat(meta)
    else:
        mat = _load_mat(base / "cars_annos.mat")
        if "class_names" not in mat:
            raise DataError(f"car_ims layout in {base}: no cars_meta.mat and no 'class_names' in cars_annos.mat")
        class_names = [str(n) for n in np.atleast_1d(mat["class_names"])]
    anno = base / "cars_annos.mat"
    records = _mat_annotations(anno, ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"))
    rows: list[dict] = []
    problems: list[dict] = []
    make_row = _RowMaker(len(class_names), problems).row
    for index, rec in enumerate(records, start=1):
        rel = str(rec.relative_im_path)
        box = (float(rec.bbox_x1), float(rec.bbox_y1), float(rec.bbox_x2), float(rec.bbox_y2))
        split = "test" if int(rec.test) else "train"
        row = make_row(base / rel, rel, int(getattr(rec, "class")), box, split, f"cars_annos.mat:{index}")
        if row:
            row["_source"] = f"cars_annos.mat:{index}"
            rows.append(row)
    rows = _check_missing(rows, problems, lambda r: r["_source"], str(anno))
    for row in rows:
        row.pop("_source")
    return Manifest(make_table(rows), class_names, "car_ims", str(base), [], problems)


# ----------------------------------------------------------------------------- kaggle


def _find_kaggle(root: Path) -> tuple[Path, Path] | None:
    """(annotation folder, image-split parent) of a Kaggle layout under root, if any."""
    for images in (root / "car_data" / "car_data", root / "car_data", root):
        if (images / "train").is_dir() or (images / "test").is_dir():
            for anno_dir in (root, root / "car_data", images):
                if (anno_dir / "names.csv").exists():
                    return anno_dir, images
    return None


def _read_kaggle_annotations(path: Path) -> dict[str, tuple[int, tuple, str]]:
    """file name -> (line number, box, class id or None) from anno_train.csv / anno_test.csv."""
    result: dict[str, tuple[int, tuple, int | None]] = {}
    for line_no, fields in _csv_rows(path):
        if line_no == 1 and not looks_numeric(fields[1] if len(fields) > 1 else ""):
            continue  # header row
        if len(fields) not in (5, 6):
            raise DataError(f"{path}:{line_no}: expected 'image,x1,y1,x2,y2[,class]', got {len(fields)} fields")
        box = tuple(_number(v, path, line_no, name) for v, name in zip(fields[1:5], BOX_FIELDS))
        class_id = _class_id(fields[5], path, line_no, "class") if len(fields) == 6 else None
        if fields[0] in result:
            raise DataError(f"{path}:{line_no}: image {fields[0]} is annotated a second time "
                            f"(first on line {result[fields[0]][0]})")
        result[fields[0]] = (line_no, box, class_id)
    return result


def read_kaggle(root: Path) -> Manifest:
    found = _find_kaggle(root)
    if not found:
        raise DataError(
            f"kaggle layout not found in {root}: need car_data/car_data/train|test/<class>/ "
            "(or car_data/train|test) and names.csv"
        )
    anno_dir, images = found
    class_names = read_names_csv(anno_dir / "names.csv")
    by_folder = folder_to_class_index(class_names)
    rows: list[dict] = []
    problems: list[dict] = []
    notes: list[str] = []
    ignored: list[dict] = []
    make_row = _RowMaker(len(class_names), problems).row
    for split in ("train", "test"):
        split_dir = images / split
        if not split_dir.is_dir():
            continue
        anno_path = anno_dir / f"anno_{split}.csv"
        annotations = _read_kaggle_annotations(anno_path) if anno_path.exists() else {}
        if not annotations:
            notes.append(f"no {anno_path.name}: {split} images are read without boxes")
        on_disk: set[str] = set()
        for folder in _class_folders(split_dir, ignored):
            folder_class = _class_of_folder(folder, by_folder, str(anno_dir / "names.csv"))
            for image in _class_images(folder, ignored):
                on_disk.add(image.name)
                line_no, box, class_id = annotations.get(image.name, (None, None, None))
                source = f"{anno_path.name}:{line_no}" if line_no else f"{split}/{folder.name}"
                if class_id is not None and class_id - 1 != folder_class:
                    problems.append({"path": str(image), "source": source,
                                     "reason": f"label mismatch: annotation says class id {class_id}, "
                                               f"folder says {folder_class + 1}; row skipped"})
                    continue
                rows.append(make_row(image, f"{split}/{folder.name}/{image.name}", folder_class + 1, box, split, source))
        for name, (line_no, _, _) in annotations.items():
            if name not in on_disk:
                problems.append({"path": str(split_dir / name), "source": f"{anno_path.name}:{line_no}",
                                 "reason": "missing: annotated image is not in any class folder"})
    return Manifest(make_table(rows), class_names, "kaggle", str(images), notes, problems, ignored)


# ----------------------------------------------------------------------------- folder


def find_names_file(root: Path) -> Path | None:
    """A names.csv in the dataset root or its parent (where the shared copy keeps it)."""
    return _first_existing([root / "names.csv", root.parent / "names.csv"])


def read_folder(root: Path) -> Manifest:
    ignored: list[dict] = []
    folders = []
    for folder in _class_folders(root, ignored):
        if folder.name.startswith("_"):  # such as the cropper's _unlabelled/: images without a class
            ignored.append({"path": str(folder), "reason": "a folder starting with '_' holds no class"})
        else:
            folders.append(folder)
    ignored += [{"path": str(image), "reason": "an image directly in the dataset root belongs to no class folder"}
                for image in scan_folder(root).images]
    if not folders:
        raise DataError(f"folder layout not found in {root}: need <class>/<image> sub-folders with images")
    names_file = find_names_file(root)
    notes: list[str] = []
    if names_file:
        class_names = read_names_csv(names_file)
    else:
        class_names = [f.name for f in folders]
        notes.append(f"no names.csv in {root} or its parent: classes are numbered in alphabetical folder order")
    by_folder = folder_to_class_index(class_names)
    rows: list[dict] = []
    problems: list[dict] = []
    make_row = _RowMaker(len(class_names), problems).row
    for folder in folders:
        class_index = _class_of_folder(folder, by_folder, str(names_file))
        for image in _class_images(folder, ignored):
            rows.append(make_row(image, f"{folder.name}/{image.name}", class_index + 1, None, "", folder.name))
    return Manifest(make_table(rows), class_names, "folder", str(root), notes, problems, ignored)


# ----------------------------------------------------------------------------- csv


def read_csv_manifest(path: Path) -> Manifest:
    """A CSV manifest ``path,label[,x1,y1,x2,y2][,split]`` (``class_id`` is accepted for label).

    Paths are relative to the manifest's folder (``\\`` and ``/`` are both separators) or absolute.
    A label is a 1-based class id whatever its spelling (``3``, ``03``, ``3.0``, `` 3``), a class name
    (of the names.csv beside the manifest when there is one; compared after NFC and stripping), or
    "no label" (empty, ``-1``, ``NaN``, ``NA``, ``?``, ``none``): such rows are read as unlabelled,
    counted and named in a note. Without a names.csv, classes are ``class_<id>`` for ids, or the
    names sorted for names; an id past the last class is a problem row (counted and named).
    Raises DataError naming the line for an id below 1, a label that is neither a whole id nor a known name, or ids mixed with
    names without a names.csv.
    """
    rows_iter = _csv_rows(path)
    try:
        _, header = next(rows_iter)
    except StopIteration:
        raise DataError(f"{path} is empty; expected a header 'path,label[,x1,y1,x2,y2][,split]'") from None
    header = [h.lower() for h in header]
    label_col = "label" if "label" in header else "class_id" if "class_id" in header else None
    if "path" not in header or label_col is None:
        raise DataError(f"{path}:1: header must name 'path' and 'label' (or 'class_id'), got {','.join(header)}")
    has_box = all(f in header for f in BOX_FIELDS)
    records = []
    for line_no, fields in rows_iter:
        if len(fields) != len(header):
            raise DataError(f"{path}:{line_no}: expected {len(header)} fields, got {len(fields)}")
        record = dict(zip(header, fields))
        records.append((line_no, record, parse_label(record[label_col])))
    ids = [(line_no, label) for line_no, _, label in records if isinstance(label, int)]
    names = [(line_no, label) for line_no, _, label in records if isinstance(label, str)]
    for line_no, label in ids:
        if label < 1:
            raise DataError(f"{path}:{line_no}: class id {label} is below 1; class ids are 1-based as in the dataset "
                            "(names.csv / cars_meta.mat order), and -1 or an empty cell marks an unlabelled image")
    for line_no, label in names:
        if looks_numeric(label):
            raise DataError(f"{path}:{line_no}: label {label!r} is a number but not a whole class id")
    names_file = path.parent / "names.csv"
    if names_file.exists():
        class_names, names_source = read_names_csv(names_file), str(names_file)
    elif ids and names:
        raise DataError(f"{path}:{names[0][0]}: label {names[0][1]!r} is a class name but line {ids[0][0]} gives the "
                        f"class id {ids[0][1]}; without a names.csv beside {path.name} the labels must be all ids or all names")
    elif ids:
        class_names, names_source = [f"class_{i}" for i in range(1, max(label for _, label in ids) + 1)], "the ids"
    else:
        class_names, names_source = sorted({label for _, label in names}), "the labels"
    by_name = folder_to_class_index(class_names)
    rows, problems, unlabelled = [], [], []
    make_row = _RowMaker(len(class_names), problems).row
    for line_no, rec, label in records:
        if isinstance(label, str):
            if label not in by_name:
                raise DataError(f"{path}:{line_no}: label {label!r} is neither a whole class id nor a class name "
                                f"of {names_source}")
            label = by_name[label] + 1
        if label is None:
            unlabelled.append(line_no)
        rel = normalise_rel_path(rec["path"])
        image = Path(rel) if Path(rel).is_absolute() else path.parent / rel
        box = tuple(_number(rec[f], path, line_no, f) for f in BOX_FIELDS) if has_box and rec["x1"] else None
        # An id past the last class is kept as a problem (counted and named in every report), as in the other layouts.
        row = make_row(image, rel, label, box, rec.get("split", ""), f"{path.name}:{line_no}")
        if row:
            row["_source"] = f"{path.name}:{line_no}"
            rows.append(row)
    notes = []
    if unlabelled:
        lines = ", ".join(map(str, unlabelled[:10])) + (f" and {len(unlabelled) - 10} more" if len(unlabelled) > 10 else "")
        notes.append(f"{len(unlabelled)} row(s) of {path.name} have no label (empty, -1, NaN, ?): read as unlabelled "
                     f"(line(s) {lines})")
    rows = _check_missing(rows, problems, lambda r: r["_source"], str(path))
    for row in rows:
        row.pop("_source")
    return Manifest(make_table(rows), class_names, "csv", str(path.parent), notes, problems)


READERS: dict[str, Callable[[Path], Manifest]] = {
    "devkit": read_devkit,
    "kaggle": read_kaggle,
    "car_ims": read_car_ims,
    "folder": read_folder,
    "csv": read_csv_manifest,
}


# Index files a layout reads beside its images (names, annotations, the cropper's manifest).
INDEX_FILES = ("names.csv", "crops.csv", "anno_train.csv", "anno_test.csv", "cars_meta.mat", "cars_annos.mat",
               "cars_train_annos.mat", "cars_test_annos.mat", "cars_test_annos_withlabels.mat")


def dataset_files(manifest: Manifest) -> set[str]:
    """Every file reading ``manifest`` may have used: its images and the index files in its root, the
    root's parent and their ``devkit/`` folders. An output must not replace one of them
    (``outputs.check_output_path``'s ``reads``)."""
    root = Path(manifest.root)
    files = {str(path) for path in manifest.table.path}
    for folder in (root, root.parent, root / "devkit", root.parent / "devkit"):
        files.update(str(folder / name) for name in INDEX_FILES if (folder / name).exists())
    return files
