"""Training on Ray Train: the training-run object, the per-worker loop and the driver-side runner.

``EPOCH_METRICS`` names what every epoch reports (to Ray Train, Tune, metrics.csv); the config
checks ``tune.metric``, ``train.early_stop_metric`` and ``train.select_metric`` against it before
anything starts. It lives here, free of torch, so that check costs nothing.
"""

# Numeric metrics of one epoch that can be monitored, selected on or searched over.
EPOCH_METRICS = ("val_loss", "val_top1", "val_top5", "train_loss", "train_top1")
