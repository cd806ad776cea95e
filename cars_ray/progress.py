"""What a user sees while a job runs: one live progress bar per phase, drawn by the driver alone.

Work runs in Ray tasks and training workers, whose own output stays out of the console (it goes to
the logs). They post their progress to a :class:`ProgressBoard` actor, fire-and-forget; the driver
runs the job in a thread and draws what the board holds: a tqdm bar with images/s and ETA on a
terminal, a line every ``LINE_EVERY_S`` seconds elsewhere (CI, ``ray job submit`` logs), and the
one summary line each epoch posts.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

LOGGER = logging.getLogger("cars_ray")
POLL_S = 1.0
LINE_EVERY_S = 15.0  # without a terminal: one progress line per phase this often


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Phases (name -> done, total) and summary lines, posted by tasks and workers, drained by the driver."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def begin(self, phase: str, total: int) -> None:
        self.events.append(("begin", (phase, total)))

    def advance(self, phase: str, amount: int) -> None:
        self.events.append(("advance", (phase, amount)))

    def line(self, text: str) -> None:
        self.events.append(("line", text))

    def drain(self) -> list[tuple[str, Any]]:
        events, self.events = self.events, []
        return events


@dataclass
class _Phase:
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)
    bar: Any = None


class ConsoleProgress:
    """Draws a board's events on ``stream``: bars on a terminal, periodic lines otherwise."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.phases: dict[str, _Phase] = {}

    def handle(self, events: list[tuple[str, Any]]) -> None:
        for kind, payload in events:
            if kind == "begin":
                self.begin(*payload)
            elif kind == "advance":
                self.advance(*payload)
            else:
                self.say(payload)

    def begin(self, phase: str, total: int) -> None:
        self.end_all()
        state = _Phase(total)
        if self.live:
            from tqdm import tqdm

            state.bar = tqdm(total=total, desc=phase, unit="img", file=self.stream, leave=False, dynamic_ncols=True)
        self.phases[phase] = state

    def advance(self, phase: str, amount: int) -> None:
        state = self.phases.get(phase)
        if state is None:
            return
        state.done += amount
        if state.bar is not None:
            state.bar.update(amount)
        elif time.monotonic() - state.last_line >= LINE_EVERY_S:
            state.last_line = time.monotonic()
            self.stream.write(progress_line(phase, state.done, state.total, time.monotonic() - state.started) + "\n")
            self.stream.flush()

    def say(self, text: str) -> None:
        self.end_all()
        self.stream.write(text + "\n")
        self.stream.flush()
        LOGGER.info(text)

    def end_all(self) -> None:
        for state in self.phases.values():
            if state.bar is not None:
                state.bar.close()
        self.phases.clear()


def progress_line(phase: str, done: int, total: int, seconds: float) -> str:
    rate = done / seconds if seconds > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("nan")
    eta_text = f"ETA {int(eta // 60)}m{int(eta % 60):02d}s" if eta == eta else "ETA ?"
    return f"[cars_ray] {phase}: {done}/{total} images ({100 * done / max(total, 1):.0f}%), {rate:.0f} img/s, {eta_text}"


@contextmanager
def progress_console(console: ConsoleProgress | None = None) -> Iterator[ProgressBoard]:
    """A board for the job run inside the ``with``, drawn by a background thread of the driver.

    The job itself stays in the calling thread, so Ctrl-C and Ray's own signal handling behave as
    without us; leaving the block draws what is left and removes the board.
    """
    # On the driver's node: the board is the console's, and must not die with a worker node (a lost
    # node is something a run survives; the board dying with it would stop the driver).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    board = ProgressBoard.options(scheduling_strategy=here).remote()
    console = console or ConsoleProgress()
    stop = threading.Event()

    def draw() -> None:
        while not stop.wait(POLL_S):
            console.handle(ray.get(board.drain.remote()))

    thread = threading.Thread(target=draw, name="cars_ray-progress", daemon=True)
    thread.start()
    try:
        yield board
    finally:
        stop.set()
        thread.join()
        console.handle(ray.get(board.drain.remote()))
        console.end_all()
        ray.kill(board)
