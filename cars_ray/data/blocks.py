"""Cutting a table into Ray Data blocks: the one place that decides how rows become tasks."""

from __future__ import annotations

import pandas as pd
import ray


def dataset_from_frame(frame: pd.DataFrame, rows_per_block: int) -> ray.data.Dataset:
    """A Ray Dataset of ``frame`` in blocks of ``rows_per_block`` rows (one block when it is empty)."""
    frame = frame.reset_index(drop=True)
    chunks = [frame.iloc[i:i + rows_per_block] for i in range(0, len(frame), rows_per_block)] or [frame]
    return ray.data.from_pandas(chunks)
