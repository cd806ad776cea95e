"""Which data path a run takes (``data.pipeline``), from the decoded size of its splits and the memory it has.

Pure arithmetic, no Ray: ``cars_ray.data.loading.resolve_pipeline`` reads the cluster's object store and node
memory and passes them here, so both sides of the budget are testable without starting anything.

The cached path holds the decoded train and val splits twice: once in Ray's object store (the materialised
dataset) and once in every training worker (``cars_ray.data.feed.CachedSplit``, one preallocated tensor). So
``auto`` picks it only when the decoded bytes fit both

- ``OBJECT_STORE_SHARE`` of the cluster's object store (Ray's guidance: materialise only what fits the store;
  the other half stays free for the decode tasks' outputs and for other work, so nothing spills), and
- ``WORKER_MEMORY_SHARE`` of one training worker's share of its node's memory (the node's Ray ``memory``
  resource divided among the training workers that fit on that node; the rest is the model, the
  optimizer, the pulled blocks in flight and the other processes of the node).

Otherwise it picks streaming, whose memory does not grow with the data.
"""

from __future__ import annotations

from dataclasses import dataclass

from cars_ray.config import DATA_PIPELINES
from cars_ray.errors import ConfigError

OBJECT_STORE_SHARE = 0.5
WORKER_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class PipelineChoice:
    """The data path of a run and the sentence saying why (printed at setup, written to run.json)."""

    pipeline: str  # cached | streaming
    reason: str  # e.g. "streaming: 44.0 GB decoded > 9.6 GB budget (50% of the object store's 19.2 GB)"
    decoded_bytes: int
    budget_bytes: int

    def as_dict(self) -> dict:
        return {"pipeline": self.pipeline, "pipeline_reason": self.reason,
                "decoded_bytes": self.decoded_bytes, "pipeline_budget_bytes": self.budget_bytes}


def decoded_bytes(num_images: int, side: int) -> int:
    """Bytes of ``num_images`` decoded uint8 images of ``side`` x ``side`` x 3 (the cached path's rows)."""
    return int(num_images) * int(side) * int(side) * 3


def human_bytes(num_bytes: float) -> str:
    """``1.0 GB`` / ``350.2 MB`` (decimal units, as Ray's memory messages use)."""
    return f"{num_bytes / 1e9:.1f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.1f} MB"


def choose_pipeline(setting: str, decoded: int, object_store_bytes: float, worker_memory_bytes: float) -> PipelineChoice:
    """The data path for ``data.pipeline`` = ``setting`` (auto | cached | streaming).

    ``decoded``: bytes of the decoded train + val splits (:func:`decoded_bytes`); ``object_store_bytes``: the
    cluster's object store capacity; ``worker_memory_bytes``: one training worker's share of its node's memory.
    Raises :class:`~cars_ray.errors.ConfigError` when ``cached`` is asked for by hand and the split cannot fit
    the object store or a worker's memory at all (it would spill and then be killed for memory).
    """
    store_budget, worker_budget = OBJECT_STORE_SHARE * object_store_bytes, WORKER_MEMORY_SHARE * worker_memory_bytes
    if store_budget <= worker_budget:
        budget, of = store_budget, f"{OBJECT_STORE_SHARE:.0%} of the object store's {human_bytes(object_store_bytes)}"
    else:
        budget, of = worker_budget, (f"{WORKER_MEMORY_SHARE:.0%} of a training worker's "
                                     f"{human_bytes(worker_memory_bytes)} share of its node's memory")
    fits = decoded <= budget
    comparison = (f"{human_bytes(decoded)} decoded {'<=' if fits else '>'} {human_bytes(budget)} budget ({of})")
    if setting == "streaming":
        return PipelineChoice("streaming", f"streaming: set by data.pipeline ({comparison})", decoded, int(budget))
    if setting == "cached":
        for capacity, where in ((object_store_bytes, "the object store holds"),
                                (worker_memory_bytes, "a training worker's share of its node's memory is")):
            if decoded > capacity:
                raise ConfigError(f"data.pipeline=cached: the decoded train and val splits take {human_bytes(decoded)} "
                                  f"but {where} {human_bytes(capacity)}; set data.pipeline=streaming (or auto)")
        return PipelineChoice("cached", f"cached: set by data.pipeline ({comparison})", decoded, int(budget))
    if setting != "auto":
        raise ConfigError(f"data.pipeline is {setting!r}; expected one of {', '.join(DATA_PIPELINES)}")
    return PipelineChoice("cached" if fits else "streaming", f"{'cached' if fits else 'streaming'}: {comparison}",
                          decoded, int(budget))
