"""Evaluate a checkpoint on labelled images: top-1/5, macro P/R/F1, balanced accuracy, per-class
report, confusion matrix and the most confused pairs.

    python pipelines/evaluate.py --checkpoint C --root-dir R [--split-file CSV] [--split test] [--tta]
                                 --output-dir O

Without --split-file every labelled image of R is evaluated. The checkpoint carries its class
names and preprocessing, so no training config is needed.
"""

from __future__ import annotations

import json
import os

from cars_ray.cli import EXIT_OK, make_parser, run_main
from cars_ray.data.layouts import LAYOUTS, read_dataset
from cars_ray.data.split import SPLITS, apply_split, read_split_file
from cars_ray.errors import DataError
from cars_ray.evaluate.evaluation import EVALUATION_OUTPUTS, EvaluationOptions, evaluate_checkpoint
from cars_ray.outputs import check_earlier_folder, check_output_path, start_output
from cars_ray.progress import progress_console
from cars_ray.runtime import add_ray_arguments, check_ray_arguments, init_ray
from cars_ray.storage import check_shared_input
from cars_ray.checkpoint import check_checkpoint, check_classes


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint directory (e.g. O/best of train.py)")
    parser.add_argument("--root-dir", required=True, help="dataset folder, a CSV manifest file, or demo (the sample shipped in the package)")
    parser.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS)
    parser.add_argument("--split-file", default=None, help="path,class_id,split file (e.g. split.csv)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="rows of --split-file to evaluate")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in --output-dir")
    add_ray_arguments(parser)
    args = parser.parse_args(argv)

    # meta.json (read once, for the whole command) and model.pt, here rather than in a Ray actor
    meta = check_checkpoint(args.checkpoint)
    manifest = read_dataset(args.root_dir, args.layout)
    check_classes(meta, manifest.class_names, args.root_dir)
    if args.split_file:
        table = apply_split(manifest, read_split_file(args.split_file), args.split_file)
        rows = table[table.split == args.split]
        title = args.split
    else:
        rows, title = manifest.table[manifest.table.class_index >= 0], "all labelled images"
    if rows.empty:
        raise DataError(f"no labelled images to evaluate in {args.root_dir}" + (f" for split {args.split!r}" if args.split_file else ""))
    output_dir = check_output_path(args.output_dir, "dir", [args.checkpoint, args.root_dir, manifest.root, args.split_file],
                                   "--output-dir")
    check_earlier_folder(output_dir, "evaluate.py", EVALUATION_OUTPUTS, False, args.overwrite, can_resume=False)
    check_ray_arguments(args)  # Ray must be startable or reachable before the output folder is made
    start_output(output_dir, "evaluate.py")  # first: an interrupted evaluation is replaced with --overwrite
    init_ray(args, os.path.join(output_dir, "logs"))
    check_shared_input(rows.path.iloc[0], "the image")  # decoded by Ray Data tasks on any node
    with progress_console() as board:
        metrics = evaluate_checkpoint(args.checkpoint, rows, manifest.class_names, output_dir,
                                      EvaluationOptions(tta=args.tta, title=title, source=args.root_dir, progress=board),
                                      meta)
    print(json.dumps({k: metrics[k] for k in ("top1", "top5", "precision_macro", "recall_macro", "f1_macro",
                                                 "balanced_accuracy", "num_images")}, indent=2))
    if metrics["not_scored"]:
        shown = ", ".join(metrics["not_scored"][:10]) + (" ..." if len(metrics["not_scored"]) > 10 else "")
        print(f"warning: {len(metrics['not_scored'])} of {metrics['num_listed']} images could not be decoded and are "
              f"not scored (listed in metrics.json): {shown}")
    print(f"wrote {', '.join(EVALUATION_OUTPUTS)} to {args.output_dir}")
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
