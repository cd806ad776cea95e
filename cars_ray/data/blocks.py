"""Cutting a table into Ray Data blocks: the one place that decides how rows become tasks, and how the executor
that runs those tasks behaves in the process iterating the dataset."""

from __future__ import annotations

import time

import pandas as pd
import ray
from ray.data._internal.execution.execution_callback import ExecutionCallback

IDLE_STEP_SLEEP_S = 0.01  # the pause after a scheduling step in which nothing moved; Ray's own consumer polls at 10 ms


class IdleStepBackoff(ExecutionCallback):
    """Pauses Ray Data's scheduling loop for ``IDLE_STEP_SLEEP_S`` after a step in which nothing moved.

    Why: Ray 2.60's ``StreamingExecutor`` runs its loop in a thread of the process that iterates the dataset (a
    training worker, an evaluating driver), and the loop only ever waits inside ``ray.wait`` on its active tasks.
    When the consumer is slower than the decode tasks, output backpressure leaves those tasks finished-but-unread:
    ``ray.wait`` returns at once and the loop spins, holding that process's GIL between the model's operators.
    Measured on the 2-core machine (a 1-CPU actor training Lite0 at 128 px on a stream of Stanford Cars crops):
    the loop took 0.54 of a core and the model ran at 14 images/s against 23 without a stream; with this pause,
    21 images/s (docs/benchmarks.md, issue #22). A step is "moved" when any operator submitted or finished a task
    or produced or handed on an output; after a pause the next step sees what the consumer took meanwhile.
    """

    def __init__(self) -> None:
        self.last: tuple | None = None

    def on_execution_step(self, executor) -> None:
        topology = executor._topology  # Ray 2.60: {operator: state}; pinned in pyproject (ray <2.61)
        moved = tuple((m.num_tasks_submitted, m.num_tasks_finished, m.num_task_outputs_generated, m.num_outputs_taken)
                      for m in (op.metrics for op in topology))
        if moved == self.last:
            time.sleep(IDLE_STEP_SLEEP_S)
        self.last = moved


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
