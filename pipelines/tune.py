"""Search learning rates (and other keys) on Ray Tune, stopping bad trials early with ASHA.

    python pipelines/tune.py --config FILE [--output-dir O] [--num-samples N] [--resume] [key=value ...]

The config's `tune:` section names the search space, algorithm, scheduler, metric and per-trial
resources. O/ receives tune_results.csv (one row per trial), tune.png (validation curves),
best/ (the best trial's checkpoint, as train.py writes it) and evaluation/ (its test metrics).
Trial logs for TensorBoard: `tensorboard --logdir O/ray_results/tune`.
"""

from __future__ import annotations

import os
import time

import yaml

from cars_ray.cli import EXIT_OK, make_parser, run_main
from cars_ray.config import load_config
from cars_ray.errors import ConfigError
from cars_ray.outputs import write_atomic
from cars_ray.runtime import add_ray_arguments, init_ray


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--config", required=True, help="YAML config with a tune: section")
    parser.add_argument("--output-dir", default="runs/tune")
    parser.add_argument("--num-samples", type=int, default=None, help="trials (default: tune.num_samples)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search in --output-dir")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    add_ray_arguments(parser)
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise ConfigError(f"--num-samples must be at least 1, got {args.num_samples}")
        cfg.tune.num_samples = args.num_samples
    from cars_ray.tune.runner import run_search  # torch and Ray Train load in seconds: only once the config is good
    output_dir = os.path.abspath(args.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    write_atomic(os.path.join(output_dir, "config.yaml"),
                 lambda tmp: open(tmp, "w").write(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))
    started = time.perf_counter()
    init_ray(args.address, args.num_cpus)
    outcome = run_search(cfg, output_dir, resume=args.resume)
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
