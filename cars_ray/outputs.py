"""Writing pipeline outputs atomically: a reader never sees a half-written file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable

import pandas as pd


def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
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


def replace_dir(src: str, dst: str) -> None:
    """Copy directory ``src`` to ``dst`` so that ``dst`` appears complete or not at all."""
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
    try:
        shutil.copytree(src, os.path.join(staging, "d"))
        if os.path.exists(dst):
            old = tempfile.mkdtemp(dir=parent, prefix=".old-")
            os.replace(dst, os.path.join(old, "d"))
            shutil.rmtree(old)
        os.replace(os.path.join(staging, "d"), dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
