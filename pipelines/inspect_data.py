"""Inspect a Stanford Cars dataset in any layout: classes, counts, sizes and every problem.

    python pipelines/inspect_data.py --root-dir R --output-dir O [--show-classes N]

Writes O/inspect.json and O/samples.png (one image per class for the first N classes).
"""

from __future__ import annotations

import os

from cars_ray.cli import EXIT_OK, make_parser, run_main
from cars_ray.data.inspection import format_summary, inspect_manifest, samples_figure
from cars_ray.data.layouts import LAYOUTS, read_dataset
from cars_ray.outputs import write_figure, write_json
from cars_ray.runtime import add_ray_arguments, init_ray


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--root-dir", required=True, help="dataset folder, or a CSV manifest file")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS)
    parser.add_argument("--show-classes", type=int, default=20, help="classes in samples.png (default 20)")
    add_ray_arguments(parser)
    args = parser.parse_args(argv)

    manifest = read_dataset(args.root_dir, args.layout)
    init_ray(args.address, args.num_cpus)
    report = inspect_manifest(manifest)
    print(format_summary(report))
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, "inspect.json"), report)
    write_figure(os.path.join(args.output_dir, "samples.png"), samples_figure(manifest, args.show_classes))
    print(f"wrote {args.output_dir}/inspect.json and {args.output_dir}/samples.png")
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
