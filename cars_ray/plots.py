"""Figures (matplotlib, headless): sample grids, confusion matrices, tuning curves."""

from __future__ import annotations

import math
import textwrap
from typing import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # never open a window, also on machines with a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def sample_grid(images: Sequence[np.ndarray], titles: Sequence[str], suptitle: str, columns: int = 5,
                cell: tuple[float, float] = (3.2, 2.8), wrap: int = 28, fontsize: int = 8):
    """A titled grid of images (HWC uint8); each title's lines wrapped at ``wrap`` characters."""
    rows = max(1, math.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(cell[0] * columns, cell[1] * rows), squeeze=False, dpi=100)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title("\n".join(textwrap.fill(line, wrap) for line in title.splitlines()), fontsize=fontsize)
    figure.suptitle(suptitle)
    figure.tight_layout()
    return figure


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str):
    """All classes, row-normalised; tick labels shrink with the class count to stay legible."""
    n = len(class_names)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    # 196 classes: 20 inches at 100 dpi, 10 px a class (a larger canvas took twice as long to draw, for a 5,000 px PNG)
    side = max(6.0, min(0.16 * n + 3, 20.0))
    fontsize = max(3.0, min(9.0, 330.0 / max(n, 1)))
    figure, ax = plt.subplots(figsize=(side, side), dpi=100)
    image = ax.imshow(normalised, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(n), [textwrap.shorten(c, 40) for c in class_names], rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), [textwrap.shorten(c, 40) for c in class_names], fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    figure.colorbar(image, ax=ax, fraction=0.03, label="fraction of the true class")
    figure.tight_layout()
    return figure


def curves_figure(curves: dict[str, tuple[Sequence[float], Sequence[float]]], stopped: set[str],
                  metric: str, max_epoch: int):
    """One line per trial; trials stopped early are dashed and end with an x."""
    figure, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    for name, (epochs, values) in sorted(curves.items()):
        style = "--" if name in stopped else "-"
        (line,) = ax.plot(epochs, values, style, marker="o", markersize=3, label=name + (" (stopped)" if name in stopped else ""))
        if name in stopped and len(epochs):
            ax.plot(epochs[-1], values[-1], "x", color=line.get_color(), markersize=10, mew=2)
    ax.set_xlim(0.5, max_epoch + 0.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial (dashed: stopped early by the scheduler)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def mistakes_figure(images: Sequence[np.ndarray], captions: Sequence[str], title: str, columns: int = 4):
    """The most confident mistakes: each photo with its true and predicted names and the probability."""
    if not images:
        figure, ax = plt.subplots(figsize=(6, 2), dpi=100)
        ax.axis("off")
        ax.text(0.5, 0.5, "no mistakes on these images", ha="center", va="center")
        figure.suptitle(title)
        return figure
    return sample_grid(images, captions, f"most confident mistakes ({title})", columns, cell=(3.4, 3.6), wrap=34, fontsize=7)


def worst_classes_figure(per_class, matrix: np.ndarray, class_names: Sequence[str], count: int = 20):
    """The ``count`` classes of lowest recall (with support), each labelled with its most confused partner."""
    rows = per_class[per_class.support > 0].nsmallest(count, "recall")
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    labels = []
    for class_id in rows.class_id:
        partner = int(off[class_id - 1].argmax())
        taken = off[class_id - 1, partner]
        labels.append(textwrap.shorten(class_names[class_id - 1], 38)
                      + (f"\n  -> {textwrap.shorten(class_names[partner], 34)} ({taken}x)" if taken else ""))
    figure, ax = plt.subplots(figsize=(9, 0.55 * max(len(rows), 1) + 1.2), dpi=100)
    ax.barh(range(len(rows)), rows.recall, color="#c0504d")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("recall (share of the class's images predicted right)")
    ax.set_title(f"the {len(rows)} classes of lowest recall, with the class each is most taken for")
    ax.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def training_curves_figure(history, best_epoch: int | None):
    """Train/val loss, val top-1/top-5 and the learning rates per epoch; the best epoch marked."""
    figure, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    epochs = history.epoch
    loss_ax.plot(epochs, history.train_loss, marker="o", label="train loss")
    loss_ax.plot(epochs, history.val_loss, marker="o", label="val loss")
    acc_ax.plot(epochs, history.val_top1, marker="o", label="val top-1")
    acc_ax.plot(epochs, history.val_top5, marker="o", label="val top-5")
    acc_ax.set_ylim(0, 1)
    for column in [c for c in history.columns if c.startswith("lr_")]:
        lr_ax.plot(epochs, history[column], marker=".", label=column[3:])
    lr_ax.set_yscale("log")
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy"), (lr_ax, "learning rate (end of epoch)")):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure
