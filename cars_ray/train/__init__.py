"""Training on Ray Train: the per-worker loop, checkpoints, metrics and the driver-side runner."""
