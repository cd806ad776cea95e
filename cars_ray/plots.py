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


def sample_grid(images: Sequence[np.ndarray], titles: Sequence[str], suptitle: str, columns: int = 5):
    """A titled grid of images (HWC uint8)."""
    rows = max(1, math.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False, dpi=100)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title("\n".join(textwrap.wrap(title, 28)), fontsize=8)
    figure.suptitle(suptitle)
    figure.tight_layout()
    return figure


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str):
    """All classes, row-normalised; tick labels shrink with the class count to stay legible."""
    n = len(class_names)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    side = max(6.0, min(0.16 * n + 3, 36.0))
    fontsize = max(3.0, min(9.0, 600.0 / max(n, 1)))
    figure, ax = plt.subplots(figsize=(side, side), dpi=150 if n > 50 else 100)
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
