"""Search learning rates (and other keys) on Ray Tune, stopping bad trials early with ASHA.

    python pipelines/tune.py --config FILE [--output-dir O] [--num-samples N] [--resume | --overwrite] [key=value ...]

The config's `tune:` section names the search space, algorithm, scheduler, metric and per-trial
resources. O/ receives tune_results.csv (one row per trial), tune.png (validation curves),
best/ (the best trial's checkpoint, as train.py writes it) and evaluation/ (its test metrics).
Trial logs for TensorBoard: `tensorboard --logdir O/ray_results/tune`. An O holding an earlier
search is continued with --resume or replaced with --overwrite; without either the command stops.
"""

from __future__ import annotations

import os
import time

from cars_ray.cli import EXIT_OK, make_parser, run_main
from cars_ray.config import load_config
from cars_ray.data.loading import check_root_dir, load_training_table
from cars_ray.data.records import RECORDS_FOLDER
from cars_ray.errors import ConfigError
from cars_ray.outputs import OUTPUT_MARKER, check_earlier_folder, check_output_path, remove_outputs, start_output, write_yaml
from cars_ray.runtime import add_ray_arguments, check_ray_arguments, init_ray

SEARCH_OUTPUTS = ("config.yaml", "split.csv", "tune_results.csv", "search.json", "tune.png", "best", "evaluation", "ray_results",
                  RECORDS_FOLDER)


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--config", required=True, help="YAML config with a tune: section")
    parser.add_argument("--output-dir", default="runs/tune")
    parser.add_argument("--num-samples", type=int, default=None, help="trials (default: tune.num_samples)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search in --output-dir")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier search in --output-dir")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    add_ray_arguments(parser)
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise ConfigError(f"--num-samples must be at least 1, got {args.num_samples}")
        cfg.tune.num_samples = args.num_samples
    root = check_root_dir(cfg.data)
    output_dir = check_output_path(args.output_dir, "dir", [root, cfg.data.split_file], "--output-dir")
    if check_earlier_folder(output_dir, "tune.py", SEARCH_OUTPUTS, args.resume, args.overwrite) and args.overwrite:
        remove_outputs(output_dir, SEARCH_OUTPUTS + (OUTPUT_MARKER,))
    data = load_training_table(cfg)  # a split or batch size that cannot train fails here, before Ray starts
    from cars_ray.tune.runner import run_search  # torch and Ray Train load in seconds: only once the inputs are good
    from cars_ray.models.weights import check_model_weights

    check_model_weights(cfg.model.backbone, cfg.model.weights)  # here, not in a trial after Ray and decoding

    check_ray_arguments(args)  # Ray must be startable or reachable before the output folder is made
    start_output(output_dir, "tune.py")  # first: an interruption from here on leaves a search --resume continues
    write_yaml(os.path.join(output_dir, "config.yaml"), cfg.to_dict())
    started = time.perf_counter()
    init_ray(args, os.path.join(output_dir, "logs"))
    outcome = run_search(cfg, output_dir, resume=args.resume, data=data, verbose=args.verbose)
    metric = f"best_{cfg.tune.metric}"
    columns = ["trial_id"] + [c for c in outcome.table.columns if c.startswith("param.")] + \
              [metric, "epochs_run", "stopped_by_scheduler"]
    print("\n" + outcome.table[columns].to_string(index=False))
    if outcome.test_metrics:
        print(f"\nbest trial: test top-1 {outcome.test_metrics['top1']:.3f} on {outcome.test_metrics['num_images']} images")
    print(f"wall time {time.perf_counter() - started:.0f} s; best checkpoint: {outcome.best_dir}")
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
