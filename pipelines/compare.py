"""Compare training runs: a table of recipe, best epoch, val/test top-1, wall time and images/s, and a picture.

    python pipelines/compare.py RUN_DIR [RUN_DIR ...] [--out compare.png] [--overwrite]

Each RUN_DIR is a train.py output folder (its run.json, written at the end of a run) or a tune.py one
(its best trial is taken from tune_results.csv). Runs are listed best test top-1 first.
"""

from __future__ import annotations

import json
import os

import pandas as pd

from cars_ray.cli import EXIT_OK, make_parser, run_main
from cars_ray.errors import DataError
from cars_ray.outputs import check_earlier_output, check_output_path, write_figure

COLUMNS = ["run", "recipe", "best_epoch", "best_val_top1", "test_top1", "wall_seconds", "images_per_second"]


def read_run(run_dir: str) -> dict:
    """One row of the table from a run folder; fails naming the folder when it holds no finished run."""
    summary_path = os.path.join(run_dir, "run.json")
    if os.path.isfile(summary_path):
        with open(summary_path, encoding="utf-8") as handle:
            summary = json.load(handle)
        return {"run": run_dir, "recipe": f"{summary['run_name']}: {summary['backbone']} + {summary['head']}, "
                                          f"{summary['image_size']} px, {summary['epochs_run']} epochs",
                **{key: summary.get(key) for key in COLUMNS[2:]}}
    trials_path = os.path.join(run_dir, "tune_results.csv")
    if os.path.isfile(trials_path):
        trials = pd.read_csv(trials_path)
        best = trials.iloc[0]
        test_path = os.path.join(run_dir, "evaluation", "metrics.json")
        test_top1 = None
        if os.path.isfile(test_path):
            with open(test_path, encoding="utf-8") as handle:
                test_top1 = json.load(handle)["top1"]
        metric = next(c for c in trials.columns if c.startswith("best_"))
        return {"run": run_dir, "recipe": f"search, {len(trials)} trials, best {best.trial_id}",
                "best_epoch": int(best.best_epoch), "best_val_top1": float(best[metric]) if metric == "best_val_top1" else None,
                "test_top1": test_top1, "wall_seconds": None, "images_per_second": None}
    raise DataError(f"{run_dir} holds no finished run (no run.json of train.py, no tune_results.csv of tune.py)")


def comparison_figure(table: pd.DataFrame):
    from cars_ray.plots import plt

    figure, (accuracy_ax, time_ax) = plt.subplots(1, 2, figsize=(13, 0.5 * len(table) + 2.5), dpi=100)
    names = [os.path.basename(os.path.normpath(run)) for run in table.run]
    positions = range(len(table))
    accuracy_ax.barh([p + 0.2 for p in positions], table.best_val_top1.fillna(0), height=0.4, label="best val top-1")
    accuracy_ax.barh([p - 0.2 for p in positions], table.test_top1.fillna(0), height=0.4, label="test top-1")
    time_ax.barh(list(positions), table.wall_seconds.fillna(0), color="#888")
    for ax, label in ((accuracy_ax, "top-1"), (time_ax, "wall time (s)")):
        ax.set_yticks(list(positions), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    accuracy_ax.set_xlim(0, 1)
    accuracy_ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("runs", nargs="+", help="train.py or tune.py output folders")
    parser.add_argument("--out", default="compare.png")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)

    out = check_output_path(args.out, "file", args.runs, "--out")
    check_earlier_output(os.path.dirname(out), [os.path.basename(out)], False, args.overwrite, "the folder of --out",
                         can_resume=False)
    table = pd.DataFrame([read_run(run) for run in args.runs], columns=COLUMNS)
    table = table.sort_values("test_top1", ascending=False, na_position="last").reset_index(drop=True)
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    write_figure(out, comparison_figure(table))
    print(f"wrote {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
