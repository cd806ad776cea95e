"""The manifest: one table describing a dataset, whatever layout it came from.

Columns (one row per image):
- ``path``: absolute path of the image file;
- ``rel_path``: path relative to the dataset's image root (the key split files use);
- ``class_index``: 0-based class index following the dataset's own class ids, -1 if unlabelled;
- ``x1, y1, x2, y2``: bounding box in pixel coordinates, NaN when the image is already cropped;
- ``orig_split``: the dataset's own split ("train", "test") or "" when it has none.

Class indices always follow the dataset's class-id order (names.csv / cars_meta.mat), so
index k means the same car in every layout, split file, checkpoint and prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cars_ray.data.files import normalise_name
from cars_ray.errors import DataError

MANIFEST_COLUMNS = ["path", "rel_path", "class_index", "x1", "y1", "x2", "y2", "orig_split"]
UNLABELLED = -1


def folder_name(class_name: str) -> str:
    """The folder a class is written to: "/" cannot appear in a file name, so it becomes "-"."""
    return class_name.replace("/", "-")


@dataclass
class Manifest:
    """A dataset read into a table, with its class names and what was noticed while reading."""

    table: pd.DataFrame
    class_names: list[str]
    layout: str
    root: str
    notes: list[str] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)  # rows not taken: {"path", "reason", "source"}
    ignored: list[dict] = field(default_factory=list)  # folder entries left out: {"path", "reason"} (junk, extension)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> dict[str, int]:
        """Images per class name (labelled rows only), in class-index order."""
        counts = self.table.loc[self.table.class_index >= 0, "class_index"].value_counts()
        return {name: int(counts.get(i, 0)) for i, name in enumerate(self.class_names)}

    def reading_summary(self, shown: int = 10) -> list[str]:
        """Lines for the console: the notes, then every row not taken and every folder entry left out,
        counted and (the first ``shown`` of each) named, so nothing of a user's data vanishes unsaid."""
        lines = [f"note: {note}" for note in self.notes]
        for items, what in ((self.problems, "annotated or listed item(s) not used"),
                            (self.ignored, "folder entr(ies) ignored")):
            if items:
                lines.append(f"{len(items)} {what}:")
                lines += [f"  {item['path']}: {item['reason']}" + (f" [{item['source']}]" if item.get("source") else "")
                          for item in items[:shown]]
                if len(items) > shown:
                    lines.append(f"  ... and {len(items) - shown} more")
        return lines

    def has_boxes(self) -> np.ndarray:
        return self.table[["x1", "y1", "x2", "y2"]].notna().all(axis=1).to_numpy()


def make_table(rows: list[dict]) -> pd.DataFrame:
    """Build a manifest table with the standard columns and dtypes from row dicts."""
    table = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    for col in ("x1", "y1", "x2", "y2"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("float64")
    table["class_index"] = table["class_index"].astype("int64")
    table["orig_split"] = table["orig_split"].fillna("").astype(str)
    table["path"] = table["path"].astype(str)
    table["rel_path"] = table["rel_path"].astype(str)
    return table.reset_index(drop=True)


def folder_to_class_index(class_names: list[str]) -> dict[str, int]:
    """Map folder names (and the names themselves) back to class indices.

    Keys are :func:`~cars_ray.data.files.normalise_name` spellings (NFC, stripped): look a folder or a
    label up with ``mapping[normalise_name(text)]``, so a macOS (NFD) folder finds its names.csv entry.
    Raises DataError when two class names (or their folders) are one spelling: their images would merge.
    """
    mapping: dict[str, int] = {}
    for index, name in enumerate(class_names):
        for key in {normalise_name(name), normalise_name(folder_name(name))}:
            if mapping.get(key, index) != index:
                raise DataError(f"class names {class_names[mapping[key]]!r} (id {mapping[key] + 1}) and {name!r} "
                                f"(id {index + 1}) are one name or folder after Unicode NFC normalisation and "
                                "stripping spaces; their images would merge")
            mapping[key] = index
    return mapping
