"""Experiment tracking from rank 0: TensorBoard (tensorboardX) or MLflow (through Ray's integration).

``train.tracking``: ``tensorboard`` (the default: event files under ``O/tensorboard``), ``mlflow``
(``ray.air.integrations.mlflow.setup_mlflow``; a local file store under ``O/mlruns`` unless
``MLFLOW_TRACKING_URI`` says otherwise; ``pip install -e ".[mlflow]"``) or ``none``. Scalars are
written every epoch by the training worker of rank 0; the driver adds the run's figures at the end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cars_ray.errors import ConfigError

# MLflow 3 refuses its local file store unless asked for it; the local default here is that store.
FILE_STORE_OPT_IN = {"MLFLOW_ALLOW_FILE_STORE": "true"}
SCALARS = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "images_per_second", "ema_decay")


@dataclass(frozen=True)
class TrackingTarget:
    """Where a run's tracking goes, resolved on the driver (workers on other nodes see no driver env)."""

    kind: str  # none | tensorboard | mlflow
    location: str  # the TensorBoard log folder, or the MLflow tracking URI
    run_name: str

    @classmethod
    def resolve(cls, kind: str, output_dir: str, run_name: str) -> "TrackingTarget":
        if kind == "mlflow":
            try:
                import mlflow  # noqa: F401
            except ImportError:
                raise ConfigError("train.tracking=mlflow needs MLflow: pip install -e \".[mlflow]\" "
                                  "(or use tensorboard or none)") from None
            uri = os.environ.get("MLFLOW_TRACKING_URI") or "file://" + os.path.join(os.path.abspath(output_dir), "mlruns")
            return cls(kind, uri, run_name)
        return cls(kind, os.path.join(os.path.abspath(output_dir), "tensorboard"), run_name)


class EpochTracker:
    """Opened by rank 0 of a training run; ``log`` writes one epoch's scalars."""

    def __init__(self, target: TrackingTarget | None, params: dict[str, Any]):
        self.target = target
        self.writer = None
        self.mlflow = None
        if target is None or target.kind == "none":
            return
        if target.kind == "tensorboard":
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(target.location)
        else:
            from ray.air.integrations.mlflow import setup_mlflow

            if target.location.startswith("file:"):
                os.environ.update(FILE_STORE_OPT_IN)
            self.mlflow = setup_mlflow(params, tracking_uri=target.location, experiment_name=target.run_name,
                                       rank_zero_only=True, create_experiment_if_not_exists=True)

    def log(self, metrics: dict) -> None:
        values = {name: float(metrics[name]) for name in SCALARS if name in metrics}
        values.update({k: float(v) for k, v in metrics.items() if k.startswith("lr_")})
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, metrics["epoch"])
            self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.log_metrics(values, step=metrics["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.mlflow is not None:
            self.mlflow.end_run()


def add_figures(target: TrackingTarget | None, figures: dict[str, str]) -> None:
    """Put the run's pictures (name -> PNG path) beside its scalars: TensorBoard images, or artifacts of
    the newest MLflow run of the experiment (the one rank 0 just wrote)."""
    if target is None or target.kind == "none":
        return
    present = {name: path for name, path in figures.items() if os.path.isfile(path)}
    if target.kind == "tensorboard":
        import numpy as np
        from PIL import Image
        from tensorboardX import SummaryWriter

        with SummaryWriter(target.location) as writer:
            for name, path in present.items():
                writer.add_image(name, np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")
    else:
        from mlflow.tracking import MlflowClient

        if target.location.startswith("file:"):
            os.environ.update(FILE_STORE_OPT_IN)
        client = MlflowClient(target.location)
        experiment = client.get_experiment_by_name(target.run_name)
        runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                                  max_results=1) if experiment else []
        for path in present.values() if runs else ():
            client.log_artifact(runs[0].info.run_id, path)
