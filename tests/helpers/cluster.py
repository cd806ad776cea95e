"""`ray job submit --working-dir .` against a running cluster, and the job's console (`ray job logs`), as a
user runs them. The cluster is the session's Ray (``conftest.job_cluster``): ``{"address": dashboard URL,
"env": the client's environment}``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from helpers.data import REPO

RAY = str(Path(sys.executable).with_name("ray"))
AGENT_WAIT_ATTEMPTS, AGENT_WAIT_S = 7, 10.0
CLI_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+\s+\w+ cli\.py:\d+ -- ")  # `ray job logs`' own lines, not the job's


def submit(cluster: dict, *entrypoint: str, submission_id: str | None = None,
           timeout: int = 600) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir .` as a user would; waits for the job to end.

    Ray's job server refuses a submission until the head's dashboard agent has registered with it ("No
    available agent to submit job, please try again later"), which on a loaded machine can take tens of
    seconds after the start: then the submission is tried again, as Ray's message says, for up to a minute
    (nothing was submitted, so the submission id is still free)."""
    named = ["--submission-id", submission_id] if submission_id else []
    for attempt in range(AGENT_WAIT_ATTEMPTS):
        proc = subprocess.run(
            [RAY, "job", "submit", "--address", cluster["address"], *named, "--working-dir", str(REPO),
             "--runtime-env-json", json.dumps({"excludes": [".git", "runs", "outputs", ".stage", "*.onnx"]}), "--",
             *entrypoint],
            env=cluster["env"], cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0 or "No available agent to submit job" not in proc.stdout + proc.stderr:
            return proc
        time.sleep(AGENT_WAIT_S)
    return proc


def job_logs(cluster: dict, submission_id: str) -> str:
    """What the job's entrypoint printed: its console, without the lines of `ray job logs` and of the job
    supervisor ("Running entrypoint for job ...")."""
    proc = subprocess.run([RAY, "job", "logs", "--address", cluster["address"], submission_id], env=cluster["env"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if not CLI_LINE.match(line)]
    return "\n".join(lines[1:] if lines and lines[0].startswith("Running entrypoint for job") else lines)
