"""Names of files and folders as the field hands them over: which files are images, which are junk,
how a relative path, a class name or a label cell is spelled, and which images are copies of each other.

One home for what every folder scan (layouts, prediction inputs) and every reader of a user's table
(CSV manifests, split files) must agree on:

- :data:`IMAGE_SUFFIXES`: the extensions read as images, compared case-insensitively;
- :func:`ignored_reason`: dot-files and dot-folders (``.ipynb_checkpoints``, ``.DS_Store``, ``._x.jpg``),
  ``__MACOSX``, ``Thumbs.db``, ``desktop.ini``, and names that are not valid UTF-8 (they cannot be
  carried through Arrow tables or written to a CSV file);
- :func:`scan_folder`: the images of one folder plus every entry it left out, each with its reason;
- :func:`normalise_rel_path` (``\\`` is a separator, ``./a.jpg`` is ``a.jpg``) and :func:`normalise_name`
  (Unicode NFC, surrounding whitespace stripped);
- :func:`parse_label`: a label cell as a class id, a class name or "unlabelled";
- :func:`content_hash` and :func:`duplicate_groups`: exact copies by SHA-256 of the bytes.
"""

from __future__ import annotations

import hashlib
import math
import os
import posixpath
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

# Every extension Pillow reads that a photo is commonly saved with (JPEG's four spellings included).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
JUNK_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}  # compared case-insensitively
# Spellings of "no label" in a label column (compared case-insensitively, after stripping); -1 is the
# convention of the devkit's unlabelled test annotations and of many tools.
UNLABELLED_SPELLINGS = {"", "-1", "nan", "na", "n/a", "none", "null", "?", "unknown", "unlabelled", "unlabeled"}
_INTEGER = re.compile(r"^[+-]?\d+(\.0*)?$")  # 3, 03, +3, 3.0, 3. (a float spelling of a whole number)


def is_image_name(name: str) -> bool:
    """True when ``name`` ends in one of :data:`IMAGE_SUFFIXES` (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def ignored_reason(name: str) -> str | None:
    """Why a folder entry named ``name`` is left out of every scan (junk, hidden, not UTF-8), or None."""
    if name.startswith("."):
        return "hidden or system file (name starts with '.')"
    if name.lower() in JUNK_NAMES:
        return "system or archive junk"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (it cannot be carried through Arrow tables or CSV files)"
    return None


def printable(path: str | os.PathLike) -> str:
    """A path as text that can always be printed and written: undecodable bytes appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass
class FolderScan:
    """What :func:`scan_folder` found: image files, sub-folders, and the entries it left out."""

    images: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)  # {"path", "reason"}: junk, hidden, not UTF-8
    not_images: list[dict] = field(default_factory=list)  # {"path", "reason"}: files of other extensions


def scan_folder(folder: Path) -> FolderScan:
    """The entries of ``folder`` (sorted by name), split into images, sub-folders and what was left out.

    Junk and hidden entries (:func:`ignored_reason`) are never images or class folders; files whose
    extension is not in :data:`IMAGE_SUFFIXES` are listed in ``not_images`` so a report can name them.
    """
    scan = FolderScan()
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        reason = ignored_reason(entry.name)
        if reason:
            scan.ignored.append({"path": printable(entry), "reason": reason})
        elif entry.is_dir():
            scan.folders.append(entry)
        elif is_image_name(entry.name):
            scan.images.append(entry)
        elif entry.is_file():
            scan.not_images.append({"path": str(entry), "reason": "extension is not one of "
                                                                  + " ".join(IMAGE_SUFFIXES)})
    return scan


def normalise_rel_path(text: str) -> str:
    """A relative path as the tables compare it: ``\\`` is a separator, ``./`` and ``a/../`` are resolved.

    ``imgs\\a.jpg``, ``./imgs/a.jpg`` and ``imgs//a.jpg`` all become ``imgs/a.jpg``; an absolute
    path keeps its leading ``/``.
    """
    text = text.strip().replace("\\", "/")
    return posixpath.normpath(text) if text else text


def normalise_name(name: str) -> str:
    """A class name as names compare: Unicode NFC (macOS zips write NFD), surrounding whitespace stripped."""
    return unicodedata.normalize("NFC", name).strip()


def parse_label(text: str) -> int | str | None:
    """One label cell: an ``int`` class id (``3``, ``03``, ``3.0``, `` 3``), ``None`` for no label
    (empty, ``-1``, ``NaN``, ``?``, ``NA``, ``none``, ...), else the class name (NFC, stripped).

    A number that is not whole (``2.5``) or not finite is returned as text, so the caller names it.
    """
    value = normalise_name(text)
    if value.lower() in UNLABELLED_SPELLINGS:
        return None
    if _INTEGER.match(value):
        return int(float(value)) if "." in value else int(value)
    try:
        number = float(value)
    except ValueError:
        return value
    return value if not math.isfinite(number) or number != int(number) else int(number)


def looks_numeric(text: str) -> bool:
    """True when the cell spells a number of any kind (``2.5``, ``1e3``), so it can be no class name."""
    try:
        float(text)
        return True
    except ValueError:
        return False


def content_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex): equal for exact copies whatever their names."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def duplicate_groups(paths: Iterable[str], hashes: Iterable[str]) -> list[list[str]]:
    """Groups (two or more distinct paths each, sorted; groups sorted by first path) of files with equal
    hashes. A path listed more than once (an image with several boxes) is one file, not a copy."""
    by_hash: dict[str, set[str]] = {}
    for path, digest in zip(paths, hashes):
        if digest:
            by_hash.setdefault(digest, set()).add(path)
    return sorted((sorted(group) for group in by_hash.values() if len(group) > 1), key=lambda g: g[0])
