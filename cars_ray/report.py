"""``O/report.html``: one self-contained page per run (pictures embedded, no network) to open from a share.

It shows the headline metrics against the val and test counts, the curves, the confusion matrix,
the worst classes and the most confident mistakes, the resolved config, and for a search the
trials table and their curves. Built from the files the run left in its folder, so it says what
the files say.
"""

from __future__ import annotations

import base64
import html
import json
import os

import pandas as pd

from cars_ray.outputs import write_text

STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:1400px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
pre{background:#f8f8f8;padding:1rem;font-size:.8rem;overflow:auto}.headline{font-size:1.1rem}"""
PICTURES = (("Training curves", "curves.png"), ("Validation curves per trial", "tune.png"),
            ("Worst classes", "evaluation/per_class.png"), ("Most confident mistakes", "evaluation/errors.png"),
            ("Confusion matrix", "evaluation/confusion_matrix.png"))


def write_report(run_dir: str, title: str) -> str:
    """Write ``run_dir/report.html`` (atomically) and return its path."""
    path = os.path.join(run_dir, "report.html")
    page = build_report(run_dir, title)
    write_text(path, page)
    return path


def build_report(run_dir: str, title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>", headline(run_dir)]
    trials = os.path.join(run_dir, "tune_results.csv")
    if os.path.isfile(trials):
        parts.append("<h2>Trials</h2>" + table_html(pd.read_csv(trials).drop(columns=["trial_dir", "best_checkpoint"],
                                                                               errors="ignore")))
    history = os.path.join(run_dir, "metrics.csv")
    if os.path.isfile(history):
        columns = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "images_per_second",
                   "epoch_seconds", "stop_reason"]
        frame = pd.read_csv(history, keep_default_na=False)
        parts.append("<h2>Epochs</h2>" + table_html(frame[[c for c in columns if c in frame]]))
    for heading, name in PICTURES:
        picture = os.path.join(run_dir, name)
        if os.path.isfile(picture):
            with open(picture, "rb") as handle:
                encoded = base64.b64encode(handle.read()).decode("ascii")
            parts.append(f"<h2>{heading}</h2><img alt='{html.escape(heading)}' src='data:image/png;base64,{encoded}'>")
    config = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as handle:
            parts.append(f"<h2>Resolved config</h2><pre>{html.escape(handle.read())}</pre>")
    return "".join(parts) + "</body></html>\n"


def headline(run_dir: str) -> str:
    """Best validation and test figures, each with the number of images behind it."""
    rows = []
    meta_path = os.path.join(run_dir, "best", "meta.json")
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as handle:
            metrics = json.load(handle).get("metrics", {})
        if "val_top1" in metrics:
            rows.append(("validation (best epoch %s)" % metrics.get("epoch", "?"), metrics["val_top1"],
                         metrics.get("val_top5"), metrics.get("val_images")))
    test_path = os.path.join(run_dir, "evaluation", "metrics.json")
    if os.path.isfile(test_path):
        with open(test_path, encoding="utf-8") as handle:
            test = json.load(handle)
        rows.append((f"test{' (flip TTA)' if test.get('tta') else ''}", test["top1"], test.get("top5"),
                     test.get("num_images")))
    if not rows:
        return "<p class='headline'>No metrics yet.</p>"
    body = "".join(f"<tr><td>{html.escape(name)}</td><td>{top1:.3f}</td><td>{'' if top5 is None else f'{top5:.3f}'}</td>"
                   f"<td>{'' if count is None else count}</td></tr>" for name, top1, top5, count in rows)
    return ("<table class='headline'><tr><th>split</th><th>top-1</th><th>top-5</th><th>images</th></tr>"
            f"{body}</table>")


def table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, escape=True)
