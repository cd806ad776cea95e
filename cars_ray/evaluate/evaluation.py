"""Evaluate a checkpoint on labelled rows: metrics.json, per_class.csv, confused_pairs.csv, predictions.csv
and the pictures confusion_matrix.png, errors.png (the most confident mistakes) and per_class.png
(the worst classes by recall, each with the class it is most taken for)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cars_ray.checkpoint import CheckpointMeta, check_classes
from cars_ray.data.loading import decoded_dataset
from cars_ray.evaluate.predictor import scored_batches
from cars_ray.inference.model import describe
from cars_ray.preprocessing import Preprocessing
from cars_ray.outputs import write_csv, write_figure, write_json
from cars_ray.plots import confusion_matrix_figure, mistakes_figure, worst_classes_figure

EVALUATION_OUTPUTS = ("metrics.json", "per_class.csv", "confused_pairs.csv", "predictions.csv", "confusion_matrix.png",
                      "errors.png", "per_class.png")
EVALUATE_PHASE = "evaluating"
MISTAKES_SHOWN = 16


@dataclass(frozen=True)
class EvaluationOptions:
    tta: bool = False  # average with the horizontally flipped image
    title: str = "test"  # the rows' name in titles and metrics.json
    source: str = "the dataset"  # where the class names come from, for error messages
    progress: Any = None  # a ProgressBoard the caller draws, or None


def score_rows(checkpoint_dir: str, meta: CheckpointMeta, rows: pd.DataFrame, tta: bool = False, progress=None,
               batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels int64 (N,), probabilities float32 (N, classes), rel_paths) for manifest rows, decoded and
    predicted on Ray; ``meta``: the checkpoint's."""
    if progress is not None:
        progress.begin.remote(EVALUATE_PHASE, len(rows))
    labels, probs, paths = [], [], []
    for batch in scored_batches(decoded_dataset(rows, meta.preprocessing), checkpoint_dir, meta, len(rows), tta,
                                batch_size):
        labels.append(batch["label"]), probs.append(batch["probs"]), paths.extend(batch["rel_path"].tolist())
        if progress is not None:
            progress.advance.remote(EVALUATE_PHASE, len(batch["label"]))
    if not labels:
        return np.zeros(0, np.int64), np.zeros((0, len(meta.class_names)), np.float32), []
    return np.concatenate(labels), np.concatenate(probs), paths


def evaluate_checkpoint(checkpoint_dir: str, rows: pd.DataFrame, class_names: list[str], output_dir: str,
                        options: EvaluationOptions = EvaluationOptions(), meta: CheckpointMeta | None = None) -> dict:
    """Score ``rows`` and write the evaluation files to ``output_dir``; returns the metrics. ``meta``: the
    checkpoint's when the caller has read it (meta.json is read once), else read here. Raises CheckpointError
    when the checkpoint's classes are not ``class_names``."""
    # scikit-learn loads here, not at import: the train and tune drivers import this module, and a run without
    # test rows never evaluates.
    from cars_ray.evaluate.metrics import class_confusion, classification_metrics, confused_pairs, per_class_report

    meta = meta or describe(checkpoint_dir)
    check_classes(meta, class_names, options.source)
    labels, probs, paths = score_rows(checkpoint_dir, meta, rows, options.tta, options.progress)
    metrics = classification_metrics(labels, probs)
    metrics.update({"split": options.title, "tta": options.tta, "checkpoint": os.path.abspath(checkpoint_dir)})
    # An image that could not be decoded is not scored: counted and named, never dropped unsaid.
    unscored = sorted(set(rows.rel_path) - set(paths))
    metrics.update({"num_listed": int(len(rows)), "not_scored": unscored})
    matrix = class_confusion(labels, probs.argmax(1), len(class_names))
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, "metrics.json"), metrics)
    per_class = per_class_report(labels, probs, class_names)
    write_csv(os.path.join(output_dir, "per_class.csv"), per_class)
    write_csv(os.path.join(output_dir, "confused_pairs.csv"), confused_pairs(matrix, class_names))
    predictions = pd.DataFrame({"path": paths, "true_id": labels + 1, "predicted_id": probs.argmax(1) + 1,
                                "confidence": probs.max(1)})
    write_csv(os.path.join(output_dir, "predictions.csv"), predictions)
    title = f"{options.title}: top-1 {metrics['top1']:.3f} on {metrics['num_images']} images"
    write_figure(os.path.join(output_dir, "confusion_matrix.png"), confusion_matrix_figure(matrix, class_names, title))
    write_figure(os.path.join(output_dir, "per_class.png"), worst_classes_figure(per_class, matrix, class_names))
    write_figure(os.path.join(output_dir, "errors.png"),
                 mistakes_figure(*confident_mistakes(meta.preprocessing, rows, predictions, class_names), title=title))
    return metrics


def confident_mistakes(preprocessing: Preprocessing, rows: pd.DataFrame, predictions: pd.DataFrame,
                       class_names: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """The photos (as the model saw them) and captions of the most confident wrong predictions."""
    wrong = predictions[predictions.true_id != predictions.predicted_id].nlargest(MISTAKES_SHOWN, "confidence")
    by_path = rows.set_index("rel_path")
    images, captions = [], []
    for row in wrong.itertuples():
        source = by_path.loc[row.path]
        images.append(preprocessing.decode(source.path, preprocessing.row_box(source)))
        captions.append(f"true: {class_names[row.true_id - 1]}\npredicted: {class_names[row.predicted_id - 1]} "
                        f"({row.confidence:.2f})")
    return images, captions
