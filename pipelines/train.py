"""Train a car classifier on Ray Train, then evaluate the best checkpoint on the test rows.

    python pipelines/train.py --config FILE [--output-dir O] [--resume | --overwrite] [key=value ...]

Overrides look like `optim.lr=3e-4 train.epochs=30`. O/ receives config.yaml (resolved),
metrics.csv (one row per epoch), best/ (the checkpoint other pipelines take as --checkpoint)
and evaluation/ (metrics.json, per_class.csv, confusion_matrix.png, confused_pairs.csv).
An O/ that holds an earlier run is never replaced silently: --resume continues it, --overwrite
replaces it, and without either the command stops before doing anything.
"""

from __future__ import annotations

import os
import time

from cars_ray.cli import EXIT_OK, make_parser, run_main
from cars_ray.config import load_config
from cars_ray.data.loading import check_root_dir, load_training_table
from cars_ray.data.records import RECORDS_FOLDER
from cars_ray.outputs import OUTPUT_MARKER, check_earlier_folder, check_output_path, remove_outputs, start_output, write_yaml
from cars_ray.progress import progress_console
from cars_ray.runtime import add_ray_arguments, check_ray_arguments, init_ray

# What a run writes into its output folder (ray_results/<run_name> is named by the config).
RUN_OUTPUTS = ("config.yaml", "split.csv", "metrics.csv", "best", "evaluation", RECORDS_FOLDER)


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--output-dir", default=None, help="default: train.output_dir of the config")
    parser.add_argument("--resume", action="store_true", help="continue the stopped run in --output-dir")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output-dir")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    add_ray_arguments(parser)
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    root = check_root_dir(cfg.data)
    output_dir = check_output_path(args.output_dir or cfg.train.output_dir, "dir",
                                   [root, cfg.data.split_file, cfg.model.weights if os.path.isfile(cfg.model.weights) else None],
                                   "--output-dir")
    run_outputs = RUN_OUTPUTS + (os.path.join("ray_results", cfg.train.run_name),)
    if check_earlier_folder(output_dir, "train.py", run_outputs, args.resume, args.overwrite) and args.overwrite:
        remove_outputs(output_dir, run_outputs + (OUTPUT_MARKER,))
    data = load_training_table(cfg)  # a split or batch size that cannot train fails here, before Ray starts
    from cars_ray.train.runner import fit  # torch and Ray Train load in seconds: only once the inputs are good
    from cars_ray.models.weights import check_model_weights

    check_model_weights(cfg.model.backbone, cfg.model.weights)  # here, not in a worker after Ray and decoding

    cfg.train.output_dir = output_dir
    check_ray_arguments(args)  # Ray must be startable or reachable before the output folder is made
    start_output(output_dir, "train.py")  # first: an interruption from here on leaves a run --resume continues
    write_yaml(os.path.join(output_dir, "config.yaml"), cfg.to_dict())
    started = time.perf_counter()
    dashboard = init_ray(args, os.path.join(output_dir, "logs"))
    with progress_console() as board:
        outcome = fit(cfg, output_dir, resume=args.resume, data=data, progress=board, dashboard=dashboard)
    print(results_table(outcome, time.perf_counter() - started))
    return EXIT_OK


def results_table(outcome, seconds: float) -> str:
    best = outcome.best_metrics
    rows = [("best epoch", f"{best['epoch']}"), ("val top-1", f"{best['val_top1']:.3f}"),
            ("val top-5", f"{best['val_top5']:.3f}")]
    if outcome.test_metrics:
        test = outcome.test_metrics
        rows += [("test top-1", f"{test['top1']:.3f}"), ("test top-5", f"{test['top5']:.3f}"),
                 ("test macro F1", f"{test['f1_macro']:.3f}"), ("test balanced acc", f"{test['balanced_accuracy']:.3f}"),
                 ("test images", f"{test['num_images']}")]
    rows += [("wall time", f"{seconds:.0f} s"), ("checkpoint", outcome.best_dir),
             ("report", os.path.join(outcome.output_dir, "report.html"))]
    width = max(len(name) for name, _ in rows)
    return "\n".join(["", "results", "-" * 40] + [f"{name:<{width}}  {value}" for name, value in rows])


if __name__ == "__main__":
    run_main(main)
