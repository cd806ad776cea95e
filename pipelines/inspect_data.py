"""Inspect a Stanford Cars dataset in any layout: classes, counts, sizes and every problem.

    python pipelines/inspect_data.py --root-dir R --output-dir O [--split-file S] [--show-classes N] [--overwrite]

Writes O/inspect.json and O/samples.png (one image per class for the first N classes). The report
lists every problem, every folder entry ignored (junk such as .ipynb_checkpoints, __MACOSX, .DS_Store,
Thumbs.db; hidden files; names not valid UTF-8; other extensions) and every group of exact duplicates
(identical bytes) within a class, across classes and, with --split-file, across splits. Exits 1,
after writing the report, when the data cannot be trained on: no readable image, or a class
without one. An O holding an earlier report is replaced only with --overwrite.
"""

from __future__ import annotations

import os
import sys

from cars_ray.cli import EXIT_FAILED, EXIT_OK, make_parser, run_main
from cars_ray.data.inspection import format_summary, inspect_manifest, samples_figure, unusable_reasons
from cars_ray.config import BOX_FRAMES
from cars_ray.data.layouts import LAYOUTS, read_dataset
from cars_ray.data.split import read_split_file
from cars_ray.outputs import check_earlier_folder, check_output_path, start_output, write_figure, write_json
from cars_ray.runtime import add_ray_arguments, check_ray_arguments, init_ray

INSPECT_OUTPUTS = ("inspect.json", "samples.png")


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--root-dir", required=True, help="dataset folder, a CSV manifest file, or demo (the sample shipped in the package)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS)
    parser.add_argument("--split-file", default=None, help="a path,class_id,split file: report copies across its splits")
    parser.add_argument("--show-classes", type=int, default=20, help="classes listed (id, name, images) and shown in samples.png (default 20)")
    parser.add_argument("--box-frame", default="stored", choices=BOX_FRAMES,
                        help="the frame boxes are given in: stored pixels of the file (Stanford Cars', the default) or "
                             "upright, after the EXIF orientation is applied (as crop.py --box-frame)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --output-dir")
    add_ray_arguments(parser)
    args = parser.parse_args(argv)

    manifest = read_dataset(args.root_dir, args.layout)
    split = read_split_file(args.split_file) if args.split_file else None
    output_dir = check_output_path(args.output_dir, "dir", [args.root_dir, manifest.root]
                                   + ([args.split_file] if args.split_file else []), "--output-dir")
    check_earlier_folder(output_dir, "inspect_data.py", INSPECT_OUTPUTS, False, args.overwrite, can_resume=False)
    check_ray_arguments(args)  # Ray must be startable or reachable before the output folder is made
    start_output(output_dir, "inspect_data.py")  # first: an interrupted report is replaced with --overwrite
    init_ray(args, os.path.join(output_dir, "logs"))
    report = inspect_manifest(manifest, split, args.box_frame)
    print(format_summary(report, show_classes=args.show_classes))
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, "inspect.json"), report)
    write_figure(os.path.join(output_dir, "samples.png"), samples_figure(manifest, args.show_classes, args.box_frame))
    print(f"wrote {args.output_dir}/inspect.json and {args.output_dir}/samples.png")
    reasons = unusable_reasons(report)
    for reason in reasons:
        print(f"error: the data cannot be trained on: {reason}", file=sys.stderr)
    return EXIT_FAILED if reasons else EXIT_OK


if __name__ == "__main__":
    run_main(main)
