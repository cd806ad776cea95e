"""Prediction with a checkpoint on Ray Data, and full evaluation (metrics, reports, pictures)."""
