"""Compare training runs: a table of recipe, best epoch, val/test top-1, wall time and images/s, and a picture.

    python pipelines/compare.py RUN_DIR [RUN_DIR ...] [--out compare.png] [--overwrite]

Each RUN_DIR is a train.py output folder (its run.json, written at the end of a run) or a tune.py one
(its best trial from tune_results.csv; the search's wall time and the best trial's images/s from its
search.json, or "-" with a note for a search that predates it). Runs are listed best test top-1 first;
top-1 prints as a fraction, wall time in seconds (58.8 s).
"""

from __future__ import annotations

import json
import os

import pandas as pd

from cars_ray.cli import EXIT_OK, make_parser, run_main
from cars_ray.errors import DataError
from cars_ray.outputs import check_earlier_file, check_output_path, write_figure

COLUMNS = ["run", "recipe", "best_epoch", "best_val_top1", "test_top1", "wall_seconds", "images_per_second"]
# How each figure prints: top-1 as a fraction, times in seconds with one decimal, throughput whole; "-" when absent.
FORMATS = {"best_val_top1": "{:.3f}", "test_top1": "{:.3f}", "wall_seconds": "{:.1f} s", "images_per_second": "{:.0f}"}


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """The table as printed: each figure in its unit (58.8 s, not 58.800), a dash where a folder lacks it."""
    shown = table.astype(object).copy()
    for column, pattern in FORMATS.items():
        shown[column] = [pattern.format(v) if v is not None and pd.notna(v) else "-" for v in table[column]]
    return shown


def read_run(run_dir: str) -> dict:
    """One row of the table from a run folder (COLUMNS, and ``note``: why a figure is missing, or None);
    fails naming the folder when it holds no finished run."""
    summary_path = os.path.join(run_dir, "run.json")
    if os.path.isfile(summary_path):
        with open(summary_path, encoding="utf-8") as handle:
            summary = json.load(handle)
        return {"run": run_dir, "recipe": f"{summary['run_name']}: {summary['backbone']} + {summary['head']}, "
                                          f"{summary['image_size']} px, {summary['epochs_run']} epochs",
                **{key: summary.get(key) for key in COLUMNS[2:]}, "note": None}
    trials_path = os.path.join(run_dir, "tune_results.csv")
    if os.path.isfile(trials_path):
        trials = pd.read_csv(trials_path)
        best = trials.iloc[0]
        search_path = os.path.join(run_dir, "search.json")
        note = None
        if os.path.isfile(search_path):  # written at the end of a search: its wall time, the best trial's images/s
            with open(search_path, encoding="utf-8") as handle:
                search = json.load(handle)
            wall, rate, test_top1 = search.get("wall_seconds"), search.get("images_per_second"), search.get("test_top1")
        else:  # a search from before search.json was written: no time figures, and the row says why
            wall, rate, test_top1 = None, None, None
            note = (f"{run_dir} has no search.json (a search from before it was written): "
                    "its wall time and images/s are shown as -")
            test_path = os.path.join(run_dir, "evaluation", "metrics.json")
            if os.path.isfile(test_path):
                with open(test_path, encoding="utf-8") as handle:
                    test_top1 = json.load(handle)["top1"]
        metric = next(c for c in trials.columns if c.startswith("best_") and c not in ("best_epoch", "best_checkpoint"))
        return {"run": run_dir, "recipe": f"search, {len(trials)} trials, best {best.trial_id}",
                "best_epoch": int(best.best_epoch), "best_val_top1": float(best[metric]) if metric == "best_val_top1" else None,
                "test_top1": test_top1, "wall_seconds": wall, "images_per_second": rate, "note": note}
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
    check_earlier_file(out, args.overwrite, "--out")
    rows = [read_run(run) for run in args.runs]
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.sort_values("test_top1", ascending=False, na_position="last").reset_index(drop=True)
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(formatted(table).to_string(index=False))
    for row in rows:
        if row["note"]:
            print(f"note: {row['note']}")
    write_figure(out, comparison_figure(table))
    print(f"wrote {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
