"""Training on Ray Train: the training-run object, the per-worker loop and the driver-side runner.

``EPOCH_METRICS`` names what every epoch reports (to Ray Train, Tune, metrics.csv); the config
checks ``tune.metric``, ``train.early_stop_metric`` and ``train.select_metric`` against it before
anything starts. It lives here, free of torch, so that check costs nothing; so do the stop reasons
the driver reads back from a run's history without importing the training code (timm, torchvision).
"""

# Numeric metrics of one epoch that can be monitored, selected on or searched over.
EPOCH_METRICS = ("val_loss", "val_top1", "val_top5", "train_loss", "train_top1")

# Why a run ended before its epoch count (the ``stop_reason`` of its last epoch).
STOP_EARLY = "early_stopping"
STOP_NON_FINITE = "non_finite_loss"
