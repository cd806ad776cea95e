"""Classification metrics from labels and scores (scikit-learn does the arithmetic)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-sample: is the true label among the k highest scores?"""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, kth=k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """top1, top5, macro precision/recall/F1 and balanced accuracy over all classes of ``scores``."""
    num_classes = scores.shape[1]
    all_classes = np.arange(num_classes)
    predictions = scores.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=all_classes[np.isin(all_classes, labels)], average="macro", zero_division=0)
    return {
        "top1": float((predictions == labels).mean()),
        "top5": float(top_k_accuracy_score(labels, scores, k=min(5, num_classes), labels=all_classes))
        if num_classes > 2 else float((predictions == labels).mean()),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        "num_images": int(len(labels)),
    }


def per_class_report(labels: np.ndarray, scores: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Precision, recall, F1, support and top-5 per class, in class-index order."""
    all_classes = np.arange(len(class_names))
    predictions = scores.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=all_classes, average=None, zero_division=0)
    top5 = topk_correct(scores, labels, 5)
    top5_per_class = [float(top5[labels == c].mean()) if (labels == c).any() else np.nan for c in all_classes]
    return pd.DataFrame({
        "class_id": all_classes + 1, "class_name": class_names, "support": support,
        "precision": precision, "recall": recall, "f1": f1, "top5": top5_per_class,
    })


def class_confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    return confusion_matrix(labels, predictions, labels=np.arange(num_classes))


def confused_pairs(matrix: np.ndarray, class_names: list[str], limit: int = 50) -> pd.DataFrame:
    """The most frequent (true, predicted) mistakes, with the share of the true class they take."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    true_idx, pred_idx = np.nonzero(off)
    counts = off[true_idx, pred_idx]
    order = np.argsort(-counts, kind="stable")[:limit]
    totals = matrix.sum(axis=1)
    return pd.DataFrame({
        "true_id": true_idx[order] + 1,
        "true_name": [class_names[i] for i in true_idx[order]],
        "predicted_id": pred_idx[order] + 1,
        "predicted_name": [class_names[i] for i in pred_idx[order]],
        "count": counts[order],
        "fraction_of_true": counts[order] / np.maximum(totals[true_idx[order]], 1),
    })
