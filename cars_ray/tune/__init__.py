"""Hyperparameter search on Ray Tune, reusing the training loop unchanged."""
