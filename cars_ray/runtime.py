"""Connecting to Ray: the cluster a job was submitted to, or a local instance."""

from __future__ import annotations

import logging
import os

import ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster named by ``address``/RAY_ADDRESS (as under ``ray job submit``), else start locally."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # "local" starts a fresh instance rather than joining whatever cluster ran here last.
    kwargs = {"address": address} if address else {"address": "local", "num_cpus": num_cpus}
    ray.init(logging_level=logging.WARNING, configure_logging=True, **kwargs)
    # Ray Data prints a progress bar per operator; keep it, but not one line per block.
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False


def add_ray_arguments(parser) -> None:
    """--address and --num-cpus, shared by every pipeline."""
    group = parser.add_argument_group("ray")
    group.add_argument("--address", default=None,
                       help="Ray cluster address, e.g. auto for the cluster `ray start` made here (default: RAY_ADDRESS, as set by `ray job submit`, else a new local instance)")
    group.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray instance (default: all)")
