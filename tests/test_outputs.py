"""Output files and folders: modes under the umask, and the output-path guard's rules."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cars_ray.errors import DataError
from cars_ray.outputs import check_output_path, replace_dir, write_atomic, write_csv, write_json, write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_take_the_umask(tmp_path, umask_022):
    import pandas as pd

    write_text(str(tmp_path / "a.txt"), "x")
    write_json(str(tmp_path / "a.json"), {"a": 1})
    write_csv(str(tmp_path / "a.csv"), pd.DataFrame({"a": [1]}))
    write_atomic(str(tmp_path / "new" / "b.bin"), lambda tmp: Path(tmp).write_bytes(b"1"))
    for name in ("a.txt", "a.json", "a.csv", "new/b.bin"):
        assert mode(tmp_path / name) == 0o644, name
    assert mode(tmp_path / "new") == 0o755
    os.umask(0o077)
    write_text(str(tmp_path / "private.txt"), "x")
    assert mode(tmp_path / "private.txt") == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_replaced_folders_take_the_umask_not_the_sources_modes(tmp_path, umask_022):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    for name in ("model.pt", "meta.json", "sub/x"):
        (source / name).write_text(name)
        os.chmod(source / name, 0o600)
    os.chmod(source, 0o700)
    replace_dir(str(source), str(tmp_path / "best"), only=("model.pt", "meta.json"))
    replace_dir(str(source), str(tmp_path / "all"))
    assert mode(tmp_path / "best") == 0o755 and mode(tmp_path / "all") == 0o755 and mode(tmp_path / "all" / "sub") == 0o755
    for path in ("best/model.pt", "best/meta.json", "all/sub/x"):
        assert mode(tmp_path / path) == 0o644, path
    replace_dir(str(source), str(tmp_path / "best"), only=("model.pt",))  # replacing keeps the rule
    assert mode(tmp_path / "best") == 0o755 and sorted(os.listdir(tmp_path / "best")) == ["model.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all", "best", "src"]


def test_a_new_file_may_go_inside_an_input_folder_but_never_replace_an_input(tmp_path):
    data = tmp_path / "crops"
    (data / "Alpha").mkdir(parents=True)
    (data / "Alpha" / "a.jpg").write_bytes(b"jpeg")
    (data / "names.csv").write_text("1,Alpha\n")
    (data / "split.csv").write_text("an earlier split\n")
    reads = [str(data / "Alpha" / "a.jpg"), str(data / "names.csv")]
    assert check_output_path(str(data / "new.csv"), "file", [str(data)], "--out") == str(data / "new.csv")
    # an earlier output of ours beside the inputs: --overwrite is for check_earlier_output to ask
    assert check_output_path(str(data / "split.csv"), "file", [str(data)], "--out", reads=reads)
    for name in ("names.csv", "Alpha/a.jpg"):
        with pytest.raises(DataError, match=f"--out {data / name} would replace a file of the input {data}"):
            check_output_path(str(data / name), "file", [str(data)], "--out", reads=reads)
    with pytest.raises(DataError, match="would replace a file of the input"):  # not told what is read: refuse
        check_output_path(str(data / "split.csv"), "file", [str(data)], "--out")
    with pytest.raises(DataError, match="lies inside the input"):  # folders still keep apart
        check_output_path(str(data / "out"), "dir", [str(data)], "--output-dir")
    with pytest.raises(DataError, match="is the input"):
        check_output_path(str(data / "names.csv"), "file", [str(data / "names.csv")], "--out")
    with pytest.raises(DataError, match="contains the input"):
        check_output_path(str(tmp_path), "dir", [str(data)], "--output-dir")
