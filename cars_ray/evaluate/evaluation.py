"""Evaluate a checkpoint on labelled rows: metrics.json, per_class.csv, confused_pairs.csv and
confusion_matrix.png."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from cars_ray.data.loading import decoded_dataset
from cars_ray.evaluate.predictor import backend_info, predict_dataset
from cars_ray.outputs import write_csv, write_figure, write_json
from cars_ray.plots import confusion_matrix_figure
from cars_ray.checkpoint import check_classes, read_meta
from cars_ray.evaluate.metrics import class_confusion, classification_metrics, confused_pairs, per_class_report


EVALUATION_OUTPUTS = ("metrics.json", "per_class.csv", "confused_pairs.csv", "predictions.csv", "confusion_matrix.png")


def score_rows(checkpoint_dir: str, rows: pd.DataFrame, tta: bool = False, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels, probabilities, rel_paths) for manifest rows, decoded and predicted on Ray."""
    class_names, preprocessing = backend_info(checkpoint_dir)
    dataset = decoded_dataset(rows, preprocessing)
    scored = predict_dataset(dataset, checkpoint_dir, tta=tta, batch_size=batch_size)
    labels, probs, paths = [], [], []
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        labels.append(batch["label"]), probs.append(batch["probs"]), paths.extend(batch["rel_path"].tolist())
    num_classes = len(class_names)
    if not labels:
        return np.zeros(0, np.int64), np.zeros((0, num_classes), np.float32), []
    return np.concatenate(labels), np.concatenate(probs), paths


def evaluate_checkpoint(checkpoint_dir: str, rows: pd.DataFrame, class_names: list[str], output_dir: str,
                        tta: bool = False, title: str = "test", source: str = "the dataset") -> dict:
    """Score ``rows`` and write the evaluation files to ``output_dir``; returns the metrics."""
    meta = read_meta(checkpoint_dir)
    check_classes(meta, class_names, source)
    labels, probs, paths = score_rows(checkpoint_dir, rows, tta)
    metrics = classification_metrics(labels, probs)
    metrics.update({"split": title, "tta": tta, "checkpoint": os.path.abspath(checkpoint_dir)})
    matrix = class_confusion(labels, probs.argmax(1), len(class_names))
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, "metrics.json"), metrics)
    write_csv(os.path.join(output_dir, "per_class.csv"), per_class_report(labels, probs, class_names))
    write_csv(os.path.join(output_dir, "confused_pairs.csv"), confused_pairs(matrix, class_names))
    predictions = pd.DataFrame({"path": paths, "true_id": labels + 1, "predicted_id": probs.argmax(1) + 1,
                                "confidence": probs.max(1)})
    write_csv(os.path.join(output_dir, "predictions.csv"), predictions)
    figure = confusion_matrix_figure(matrix, class_names, f"{title}: top-1 {metrics['top1']:.3f} on "
                                                          f"{metrics['num_images']} images")
    write_figure(os.path.join(output_dir, "confusion_matrix.png"), figure)
    return metrics
