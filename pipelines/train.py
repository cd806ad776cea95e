"""Train a car classifier on Ray Train, then evaluate the best checkpoint on the test rows.

    python pipelines/train.py --config FILE [--output-dir O] [--resume] [key=value ...]

Overrides look like `optim.lr=3e-4 train.epochs=30`. O/ receives config.yaml (resolved),
metrics.csv (one row per epoch), best/ (the checkpoint other pipelines take as --checkpoint)
and evaluation/ (metrics.json, per_class.csv, confusion_matrix.png, confused_pairs.csv).
"""

from __future__ import annotations

import os
import time

import yaml

from cars_ray.cli import EXIT_OK, make_parser, run_main
from cars_ray.config import load_config
from cars_ray.data.loading import check_root_dir
from cars_ray.outputs import write_atomic
from cars_ray.runtime import add_ray_arguments, init_ray


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--output-dir", default=None, help="default: train.output_dir of the config")
    parser.add_argument("--resume", action="store_true", help="continue the stopped run in --output-dir")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    add_ray_arguments(parser)
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    check_root_dir(cfg.data)
    from cars_ray.train.runner import fit  # torch and Ray Train load in seconds: only once the config is good
    output_dir = os.path.abspath(args.output_dir or cfg.train.output_dir)
    cfg.train.output_dir = output_dir
    os.makedirs(output_dir, exist_ok=True)
    write_atomic(os.path.join(output_dir, "config.yaml"),
                 lambda tmp: open(tmp, "w").write(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))
    started = time.perf_counter()
    init_ray(args.address, args.num_cpus)
    print(f"[cars_ray] Ray ready in {time.perf_counter() - started:.1f}s")
    outcome = fit(cfg, output_dir, resume=args.resume)
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
    rows += [("wall time", f"{seconds:.0f} s"), ("checkpoint", outcome.best_dir)]
    width = max(len(name) for name, _ in rows)
    return "\n".join(["", "results", "-" * 40] + [f"{name:<{width}}  {value}" for name, value in rows])


if __name__ == "__main__":
    run_main(main)
