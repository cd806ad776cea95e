"""A Ray head started as a user starts one (`ray start --head` on free loopback ports, token auth), and
`ray job submit --working-dir .` against it."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from helpers.data import REPO, free_port, ray_temp_dir

RAY = str(Path(sys.executable).with_name("ray"))
CLI_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+\s+\w+ cli\.py:\d+ -- ")  # `ray job logs`' own lines, not the job's


@contextmanager
def ray_head() -> Iterator[dict]:
    """A Ray head on loopback with every port chosen free; always stopped. Yields its dashboard address and
    the environment a client needs (RAY_AUTH_MODE=token and the head's token)."""
    temp_dir = ray_temp_dir()
    token = temp_dir / "auth_token"  # a fresh machine has no ~/.ray/auth_token; the test brings its own
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    ports = ["--port", str(free_port()), "--dashboard-port", str(dashboard),
             "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
             "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
             "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]
    # --block: the head lives as long as this process, which stops every process it started on SIGTERM
    # (`ray stop` would stop every Ray instance on the machine, the test session's own included).
    with (temp_dir / "head.log").open("w") as log:  # the child keeps its own descriptor
        head = subprocess.Popen([RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--dashboard-host",
                                 "127.0.0.1", "--num-cpus", "2", "--disable-usage-stats", *ports, "--temp-dir",
                                 str(temp_dir)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_head(temp_dir / "head.log", dashboard, head)
        yield {"address": f"http://127.0.0.1:{dashboard}", "env": env}
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_head(log: Path, dashboard: int, head: subprocess.Popen, timeout: float = 180) -> None:
    """Until `ray start` says the runtime started and the dashboard answers, or fail with its output."""
    deadline = time.time() + timeout
    while time.time() < deadline and head.poll() is None:
        if "Ray runtime started" in log.read_text():
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", dashboard)) == 0:
                    return
        time.sleep(0.5)
    raise AssertionError(f"ray start --head did not come up: {log.read_text()[-3000:]}")


def submit(head: dict, *entrypoint: str, submission_id: str | None = None,
           timeout: int = 600) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir .` as a user would; waits for the job to end."""
    named = ["--submission-id", submission_id] if submission_id else []
    return subprocess.run(
        [RAY, "job", "submit", "--address", head["address"], *named, "--working-dir", str(REPO),
         "--runtime-env-json", json.dumps({"excludes": [".git", "runs", "outputs", ".stage", "*.onnx"]}), "--", *entrypoint],
        env=head["env"], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def job_logs(head: dict, submission_id: str) -> str:
    """What the job's entrypoint printed: its console, without the lines of `ray job logs` and of the job
    supervisor ("Running entrypoint for job ...")."""
    proc = subprocess.run([RAY, "job", "logs", "--address", head["address"], submission_id], env=head["env"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if not CLI_LINE.match(line)]
    return "\n".join(lines[1:] if lines and lines[0].startswith("Running entrypoint for job") else lines)
