"""Metrics against values computed by hand on a tiny known confusion matrix."""

import numpy as np
import pytest

from cars_ray.config import load_config
from cars_ray.evaluate.metrics import class_confusion, classification_metrics, confused_pairs, per_class_report


def scores_for(predictions, num_classes, second=None):
    scores = np.zeros((len(predictions), num_classes))
    scores[np.arange(len(predictions)), predictions] = 1.0
    if second is not None:
        scores[np.arange(len(predictions)), second] = 0.5
    return scores


def test_metrics_match_hand_computation():
    # true:  0 0 0 1 1 2   predicted: 0 0 1 1 2 2
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(labels, scores_for(predictions, 6))
    assert m["top1"] == pytest.approx(4 / 6)
    # per class: precision 0: 2/2, 1: 1/2, 2: 1/2 ; recall 0: 2/3, 1: 1/2, 2: 1/1
    assert m["precision_macro"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["recall_macro"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    f1 = [2 * p * r / (p + r) for p, r in ((1, 2 / 3), (0.5, 0.5), (0.5, 1))]
    assert m["f1_macro"] == pytest.approx(sum(f1) / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["num_images"] == 6


def test_top5_counts_runner_up():
    labels = np.array([0, 1])
    scores = np.array([[0.1, 0.9, 0, 0, 0, 0, 0], [0.9, 0.0, 0.02, 0.03, 0.04, 0.05, 0.06]])
    m = classification_metrics(labels, scores)
    assert m["top1"] == 0 and m["top5"] == pytest.approx(0.5)


def test_confusion_and_pairs():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 2, 2])
    matrix = class_confusion(labels, predictions, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    pairs = confused_pairs(matrix, ["a", "b", "c"])
    assert pairs[["true_name", "predicted_name", "count"]].values.tolist() == [["a", "b", 1], ["b", "c", 1]]
    report = per_class_report(labels, scores_for(predictions, 3), ["a", "b", "c"])
    assert report.support.tolist() == [3, 2, 1] and report.recall.tolist() == pytest.approx([2 / 3, 0.5, 1])


def test_early_stopping_patience_and_min_delta():
    cfg = load_config(None, ["train.early_stop_patience=2", "train.early_stop_min_delta=0.01"])
    from cars_ray.train.run import RunState

    state = RunState()
    reasons = [state.early_stop({"val_loss": v}, cfg.train) for v in (1.0, 0.996, 0.95, 0.945, 0.942)]
    assert reasons[:4] == ["", "", "", ""], "0.95 improved by more than 0.01 and reset the count"
    assert "did not improve by 0.01 for 2 epochs" in reasons[4]
