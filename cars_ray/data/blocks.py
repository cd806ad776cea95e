"""Cutting a table into Ray Data blocks: the one place that decides how rows become tasks, and how the executor
that runs those tasks behaves in the process iterating the dataset."""

from __future__ import annotations

import time

import pandas as pd
import ray
from ray.data._internal.execution.execution_callback import ExecutionCallback

# The pause after a spinning step in which nothing moved: 10 ms (Ray's own consumer polls at 10 ms), doubled at each
# further such step up to 80 ms, back to 10 ms once anything moves. 80 ms is a tenth of the 0.8 s a CPU worker's
# batch of 32 takes at 40 images/s; the window of decoded batches waiting for the consumer covers the delay.
IDLE_PAUSE_FIRST_S, IDLE_PAUSE_MAX_S = 0.01, 0.08
# A step shorter than this did not wait in ray.wait (which waits up to 100 ms for running tasks): it spun.
SPIN_STEP_S = 0.02


class IdleStepBackoff(ExecutionCallback):
    """Pauses Ray Data's scheduling loop after a step that spun (returned within ``SPIN_STEP_S``) with nothing moved:
    ``IDLE_PAUSE_FIRST_S``, doubled at each further such step up to ``IDLE_PAUSE_MAX_S``.

    Why: Ray 2.60's ``StreamingExecutor`` runs its loop in a thread of the process that iterates the dataset (a
    training worker, an evaluating driver), and the loop only ever waits inside ``ray.wait`` on its active tasks.
    When the consumer is slower than the decode tasks, output backpressure leaves those tasks finished-but-unread:
    ``ray.wait`` returns at once and the loop spins, holding that process's GIL between the model's operators.
    Measured on the 2-core machine (a 1-CPU actor training Lite0 at 128 px on a stream of Stanford Cars crops):
    the loop took 0.54 of a core and the model ran at 14 images/s against 23 without a stream; with this pause,
    21 images/s (docs/benchmarks.md, issue #22). A step is "moved" when any operator submitted or finished a task
    or produced or handed on an output; after a pause the next step sees what the consumer took meanwhile. The
    doubling: 40.2 against 38.0 images/s with a fixed 10 ms pause (3 paired runs of ``stream_overhead.py``).
    A step that waited in ``ray.wait`` (a starving consumer: tasks still decoding) is not paused: the pause
    would only delay the next batch.
    """

    def __init__(self) -> None:
        self.last: tuple | None = None
        self.pause = IDLE_PAUSE_FIRST_S
        self.step_ended = time.perf_counter()

    def on_execution_step(self, executor) -> None:
        spun = time.perf_counter() - self.step_ended < SPIN_STEP_S  # Ray's step alone: this callback's pause excluded
        topology = executor._topology  # Ray 2.60: {operator: state}; pinned in pyproject (ray <2.61)
        moved = tuple((m.num_tasks_submitted, m.num_tasks_finished, m.num_task_outputs_generated, m.num_outputs_taken)
                      for m in (op.metrics for op in topology))
        if moved == self.last and spun:
            time.sleep(self.pause)
            self.pause = min(2 * self.pause, IDLE_PAUSE_MAX_S)
        else:
            self.pause = IDLE_PAUSE_FIRST_S
        self.last = moved
        self.step_ended = time.perf_counter()


def dataset_from_frame(frame: pd.DataFrame, rows_per_block: int) -> ray.data.Dataset:
    """A Ray Dataset of ``frame`` in blocks of ``rows_per_block`` rows (one block when it is empty), whose
    executor pauses its idle scheduling steps (:class:`IdleStepBackoff`; the datasets derived from it share its
    context, so every map over it keeps the pause)."""
    frame = frame.reset_index(drop=True)
    chunks = [frame.iloc[i:i + rows_per_block] for i in range(0, len(frame), rows_per_block)] or [frame]
    dataset = ray.data.from_pandas(chunks)
    callbacks = dataset.context.custom_execution_callback_classes  # this dataset's own copy of the DataContext
    if IdleStepBackoff not in callbacks:
        dataset.context.custom_execution_callback_classes = [*callbacks, IdleStepBackoff]
    return dataset
