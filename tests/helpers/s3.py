"""An S3-compatible store on loopback (moto's server) whose uploads into checkpoint folders wait for the test.

A training run on two CPU cores can run every epoch of a tiny config between two polls of a test, so a test
that must kill a node, or the driver, *between* checkpoints cannot rely on timing. ``GatedS3Store`` holds the
requests that write into a checkpoint folder (``<run>/checkpoint_<time>/...``) the test has not admitted:
the worker's upload thread waits there, and Ray Train neither commits that checkpoint nor ends the run
(``ray.train.report``'s background upload is flushed before the training function returns).
"""

from __future__ import annotations

import re
import threading

from werkzeug.serving import make_server

# The folder Ray Train writes one checkpoint into, below ``<storage>/<run>/``; not the controller's
# ``checkpoint_manager_snapshot.json``, which sits directly in ``<run>/``.
CHECKPOINT_FOLDER = re.compile(r"/(checkpoint_[^/]+)/")
HOLD_SECONDS = 600  # a request is let through after this long, so a failing test ends instead of hanging


class CheckpointGate:
    """WSGI middleware: a write into a checkpoint folder passes once the folder is admitted.

    A folder is admitted when its first request arrives while tickets are left (one ticket, one folder), or
    once ``open`` was called. A folder first seen with no tickets left stays held even when tickets are given
    later: those are the uploads of a worker group that a test has since killed.
    """

    def __init__(self, app, tickets: int):
        self.app, self.tickets, self.opened = app, tickets, False
        self.seen: set[str] = set()
        self.admitted: set[str] = set()
        self.condition = threading.Condition()

    def __call__(self, environ, start_response):
        match = CHECKPOINT_FOLDER.search(environ.get("PATH_INFO", ""))
        if match and environ.get("REQUEST_METHOD") in ("PUT", "POST"):
            folder = match.group(1)
            with self.condition:
                if folder not in self.seen:
                    self.seen.add(folder)
                    if self.tickets > 0:
                        self.tickets -= 1
                        self.admitted.add(folder)
                self.condition.wait_for(lambda: self.opened or folder in self.admitted, timeout=HOLD_SECONDS)
        return self.app(environ, start_response)

    def admit(self, folders: int = 1) -> None:
        """Let the next ``folders`` checkpoint folders that start uploading through."""
        with self.condition:
            self.tickets += folders

    def open(self) -> None:
        """Let every upload through, held ones included."""
        with self.condition:
            self.opened = True
            self.condition.notify_all()

    def held(self) -> list[str]:
        with self.condition:
            return sorted(self.seen - self.admitted) if not self.opened else []


class GatedS3Store:
    """moto's S3 server on ``127.0.0.1:port`` behind a ``CheckpointGate`` with ``tickets`` folders admitted."""

    def __init__(self, port: int, tickets: int):
        from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        self.gate = CheckpointGate(DomainDispatcherApplication(create_backend_app), tickets)
        # threaded: a held upload must not hold the controller's snapshot writes or the test's reads
        self.server = make_server("127.0.0.1", port, self.gate, True, request_handler=MotoRequestHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.gate.open()
        self.server.shutdown()
        self.thread.join()
