"""Writing pipeline outputs atomically: a reader never sees a half-written file."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import uuid
from typing import Any, Callable, Collection, Sequence

import pandas as pd

from cars_ray.errors import DataError


def current_umask() -> int:
    """The process's umask (e.g. 0o022). Python can only read it by setting it, so it is put straight back."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _staging_name(directory: str, suffix: str = "") -> str:
    return os.path.join(directory, f".tmp-{uuid.uuid4().hex}{suffix}")


def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    The temporary file is created with mode 0666 less the umask (0644 under umask 022), as ``open``
    creates files, so the result is as readable as any other file the user writes
    (``tempfile.mkstemp`` would make it 0600 whatever the umask).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _staging_name(directory, os.path.splitext(path)[1])
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, data: Any) -> None:
    def dump(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, default=_json_default)
            handle.write("\n")
    write_atomic(path, dump)


def write_csv(path: str, frame: pd.DataFrame) -> None:
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))


def write_figure(path: str, figure) -> None:
    import matplotlib.pyplot as plt

    write_atomic(path, lambda tmp: figure.savefig(tmp, dpi=figure.dpi, bbox_inches="tight"))
    plt.close(figure)


def replace_dir(src: str, dst: str, only: Sequence[str] | None = None) -> None:
    """Copy directory ``src`` (or only the files named in ``only``) to ``dst`` so that ``dst`` appears
    complete or not at all.

    ``dst`` gets the modes a new folder and new files get under the umask (0755 / 0644 under umask
    022), whatever the source had: checkpoints come from private temporary folders (0700 / 0600).
    """
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    staging = _staging_name(parent)
    os.mkdir(staging, 0o700)  # private while it fills; its "d" is what becomes dst
    try:
        if only is None:
            shutil.copytree(src, os.path.join(staging, "d"))
        else:
            os.makedirs(os.path.join(staging, "d"))
            for name in only:
                shutil.copy2(os.path.join(src, name), os.path.join(staging, "d", name))
        _apply_umask(os.path.join(staging, "d"))
        if os.path.exists(dst):
            old = _staging_name(parent)
            os.mkdir(old, 0o700)
            os.replace(dst, os.path.join(old, "d"))
            shutil.rmtree(old)
        os.replace(os.path.join(staging, "d"), dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _apply_umask(folder: str) -> None:
    """Folders 0777 and files 0666 less the umask, below and including ``folder``."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for directory, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(directory, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o666 & ~mask)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_text(path: str, text: str) -> None:
    def dump(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
    write_atomic(path, dump)


def write_yaml(path: str, data: Any) -> None:
    import yaml

    write_text(path, yaml.safe_dump(data, sort_keys=False))


def check_output_path(path: str, kind: str, inputs: Sequence[str | None], flag: str,
                      reads: Collection[str] | None = None) -> str:
    """Resolve an output path before any work starts and refuse one that would touch an input.

    ``kind`` is "dir" or "file". The path must not be any of ``inputs`` (dataset root, manifest,
    split file, checkpoint) nor contain one. An output folder must not lie inside an input folder.
    An output file may be created inside an input folder (a split file beside the images), but must
    not replace a file there that is read as input: ``reads`` lists those files (the images and
    index files of a dataset); without it, no existing file inside an input folder is replaced.
    The path must be of the right kind where it exists, and its nearest existing parent a writable
    folder. Returns the resolved path; fails with one sentence (DataError).
    """
    resolved = os.path.realpath(path)
    read_files = None if reads is None else {os.path.realpath(name) for name in reads}
    for source in filter(None, inputs):
        real = os.path.realpath(source)
        relation = ("is" if resolved == real else "lies inside" if _inside(resolved, real)
                    else "contains" if _inside(real, resolved) else None)
        if relation == "lies inside" and kind == "file" and not os.path.isdir(resolved):
            if not os.path.lexists(resolved):
                continue  # a new file beside the inputs replaces nothing
            if read_files is not None and resolved not in read_files:
                continue  # an earlier output of ours; check_earlier_output asks for --overwrite
            raise DataError(f"{flag} {path} would replace a file of the input {source}; "
                            "write outputs somewhere apart from the inputs")
        if relation:
            raise DataError(f"{flag} {path} {relation} the input {source}; write outputs somewhere apart from the inputs")
    if kind == "dir" and os.path.exists(resolved) and not os.path.isdir(resolved):
        raise DataError(f"{flag} {path} is an existing file; it must name a folder")
    if kind == "file" and os.path.isdir(resolved):
        raise DataError(f"{flag} {path} is a folder; it must name a file")
    parent = resolved if kind == "dir" else os.path.dirname(resolved)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise DataError(f"{flag} {path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{flag} {path} cannot be written: {parent} is not writable")
    return resolved


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder and path != folder


def check_earlier_output(path: str, markers: Sequence[str], resume: bool, overwrite: bool, flag: str,
                         can_resume: bool = True) -> bool:
    """Whether ``path`` holds an earlier output (one of ``markers`` exists in it); refuse to replace one
    unless --overwrite (or continue it with --resume) was given. Fails with one sentence (DataError)."""
    if resume and overwrite:
        raise DataError("--resume and --overwrite exclude each other: continue the earlier output or replace it")
    found = [name for name in markers if os.path.exists(os.path.join(path, name))]
    if resume and not found:
        raise DataError(f"--resume: {flag} {path} holds no earlier output to continue")
    if found and not (resume or overwrite):
        how = "continue it with --resume or replace it with --overwrite" if can_resume else "replace it with --overwrite"
        raise DataError(f"{flag} {path} already holds an earlier output ({', '.join(found)}); {how}")
    return bool(found)


# Written into an output folder before any other file (logs included), so that a folder left by a run
# interrupted at any moment is recognised as that pipeline's earlier output: continued with --resume,
# replaced with --overwrite. Hidden: the folder layout and the user's listings skip it.
OUTPUT_MARKER = ".cars_ray_output.json"


def read_output_marker(path: str) -> dict | None:
    """The marker of folder ``path`` ({"pipeline": "crop.py", "started": ISO time}), or None when it has none.
    A marker that cannot be read (a run killed while writing it is impossible: it is written atomically)
    counts as one of an unknown pipeline."""
    marker = os.path.join(path, OUTPUT_MARKER)
    if not os.path.isfile(marker):
        return None
    try:
        with open(marker, encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {"pipeline": None}
    except (OSError, ValueError):
        return {"pipeline": None}


def start_output(path: str, pipeline: str) -> None:
    """Create output folder ``path`` and write its marker, before any other file of the run (Ray's start and
    its logs included). After a Ctrl-C, a crash or a lost driver at any later moment the folder is then
    an earlier output of ``pipeline`` (e.g. "crop.py"), which :func:`check_earlier_folder` lets
    --resume continue and --overwrite replace."""
    os.makedirs(path, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json(os.path.join(path, OUTPUT_MARKER), {"pipeline": pipeline, "started": started})


def check_earlier_file(path: str, overwrite: bool, flag: str) -> None:
    """A single-file output (``split.py``, ``predict.py``, ``export.py``, ``compare.py``): refuse to replace an
    existing ``path`` unless --overwrite was given. Fails with one sentence (DataError)."""
    if os.path.exists(path) and not overwrite:
        raise DataError(f"{flag} {path} already exists; replace it with --overwrite")


def check_earlier_folder(path: str, pipeline: str, markers: Sequence[str], resume: bool, overwrite: bool,
                         flag: str = "--output-dir", can_resume: bool = True, resume_fresh: bool = False) -> bool:
    """:func:`check_earlier_output` for an output folder: its marker (written first by :func:`start_output`)
    also marks an earlier output, even one interrupted before any of ``markers`` was written. A folder
    marked by another pipeline is refused. With ``resume_fresh`` (for outputs whose --resume means "do
    what is missing", like crop.py's), --resume on an absent or empty folder starts from the beginning
    instead of failing. Returns whether an earlier output is there; fails in one sentence (DataError)."""
    marker = read_output_marker(path)
    if marker is not None and marker.get("pipeline") != pipeline:
        owner = marker.get("pipeline") or "an unknown pipeline"
        raise DataError(f"{flag} {path} holds the output of {owner}, not of {pipeline}; choose another folder")
    if resume and resume_fresh and not overwrite and marker is None and not any(
            os.path.exists(os.path.join(path, name)) for name in markers):
        if not os.path.isdir(path) or not os.listdir(path):
            return False  # nothing was written yet: continuing it is starting it
    return check_earlier_output(path, tuple(markers) + (OUTPUT_MARKER,), resume, overwrite, flag, can_resume)


def remove_outputs(path: str, names: Sequence[str]) -> None:
    """Delete the named files and folders of an earlier output in ``path`` (for --overwrite)."""
    for name in names:
        target = os.path.join(path, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.remove(target)
