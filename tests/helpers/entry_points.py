"""Running a pipeline's real entry point in this process (fast: no interpreter start, imports once)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
from pathlib import Path

from cars_ray.cli import run_main

REPO = Path(__file__).resolve().parents[2]


def load_pipeline(script: str):
    """The module of ``pipelines/<script>`` (they are scripts, not a package)."""
    path = REPO / "pipelines" / script
    spec = importlib.util.spec_from_file_location(f"pipeline_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call_pipeline(script: str, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``python pipelines/<script> args``, run through the same run_main. A
    pipeline that uses Ray joins the session's (``ray_local`` must be up: ``--address`` is not needed); the
    logging it sets up for its run (handlers on the root and ``ray`` loggers) is taken down afterwards."""
    module = load_pipeline(script)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), restored_logging():
        try:
            run_main(module.main, list(args))
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def restored_logging():
    """The root and ``ray`` loggers as they were: handlers (the added ones closed), levels, propagation."""
    loggers = [logging.getLogger(), logging.getLogger("ray")]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            for handler in [h for h in logger.handlers if h not in handlers]:
                logger.removeHandler(handler)
                handler.close()
            for handler in [h for h in handlers if h not in logger.handlers]:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def tree_hash(*paths: str | os.PathLike) -> str:
    """A digest of every file (name and bytes) under the given files and folders; missing ones count too."""
    digest = hashlib.sha256()
    for root in map(Path, paths):
        if not root.exists():
            digest.update(f"missing:{root}".encode())
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            digest.update(os.fsencode(file))  # names need not be valid UTF-8
            digest.update(file.read_bytes())
    return digest.hexdigest()
