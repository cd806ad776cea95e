"""Crop every annotated image to its bounding box, in parallel over the Ray cluster (Ray Data).

    python pipelines/crop.py --root-dir R --output-dir O [--margin F] [--box-frame stored|upright]
                             [--resume | --overwrite] [--show-classes N]

O/<class folder>/<file> reads back as the `folder` layout (O/names.csv keeps the class ids;
O/crops.csv keeps each image's original split). O/crop_report.json lists every skipped item and
every box that reached past its image and was clamped. Boxes are read in stored pixels (before the
EXIF orientation; Stanford Cars' frame) unless --box-frame upright.
O must lie apart from the dataset. An O that holds an earlier crop, even one interrupted at any
moment, is continued with --resume (only missing crops are written) or redone with --overwrite;
without either the command stops.
"""

from __future__ import annotations

import os
import time

from cars_ray.cli import EXIT_OK, check_number, make_parser, run_main
from cars_ray.data.crop import CROP_OUTPUTS, crop_dataset
from cars_ray.config import BOX_FRAMES
from cars_ray.data.inspection import samples_figure
from cars_ray.data.layouts import LAYOUTS, read_dataset
from cars_ray.errors import DataError
from cars_ray.outputs import check_earlier_folder, check_output_path, start_output, write_figure, write_json
from cars_ray.runtime import add_ray_arguments, check_ray_arguments, init_ray


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--root-dir", required=True, help="dataset folder, a CSV manifest file, or demo (the sample shipped in the package)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS)
    parser.add_argument("--margin", type=float, default=0.0, help="grow each box by this fraction of its size")
    parser.add_argument("--box-frame", default="stored", choices=BOX_FRAMES,
                        help="the frame boxes are given in: stored pixels of the file (Stanford Cars', the default) or "
                             "upright, after the EXIF orientation is applied")
    parser.add_argument("--resume", action="store_true", help="continue an earlier crop in --output-dir (skip finished files)")
    parser.add_argument("--overwrite", action="store_true", help="redo an earlier crop in --output-dir")
    parser.add_argument("--show-classes", type=int, default=0, help="also write O/samples.png for the first N classes")
    add_ray_arguments(parser)
    args = parser.parse_args(argv)
    check_number(args.margin, "--margin", minimum=0)

    manifest = read_dataset(args.root_dir, args.layout)
    output_dir = check_output_path(args.output_dir, "dir", [args.root_dir, manifest.root], "--output-dir")
    earlier = check_earlier_folder(output_dir, "crop.py", CROP_OUTPUTS, args.resume, args.overwrite, resume_fresh=True)
    if not earlier and os.path.isdir(output_dir) and os.listdir(output_dir):
        raise DataError(f"--output-dir {args.output_dir} is not empty and holds no earlier crop; choose a new or empty folder")
    print(f"{manifest.layout} layout: {len(manifest.table)} images, {manifest.num_classes} classes")
    for note in manifest.notes:
        print(f"note: {note}")
    check_ray_arguments(args)  # Ray must be startable or reachable before the output folder is made
    start_output(output_dir, "crop.py")  # first: an interruption from here on leaves a folder --resume continues
    started = time.perf_counter()
    init_ray(args, os.path.join(output_dir, "logs"))
    ray_started = time.perf_counter()
    report = crop_dataset(manifest, output_dir, args.margin, overwrite=args.overwrite, box_frame=args.box_frame)
    elapsed = time.perf_counter() - ray_started
    report["seconds"] = {"ray_start": round(ray_started - started, 2), "crop": round(elapsed, 2)}
    report["images_per_second"] = round(report["num_images"] / elapsed, 1) if elapsed > 0 else None
    write_json(os.path.join(output_dir, "crop_report.json"), report)
    print(f"written {report['written']} (of which {report['clamped']} from boxes clamped to the image), "
          f"already present {report['already_present']}, "
          f"skipped {report['skipped']} ({report['skipped_while_cropping']} while cropping, "
          f"{report['skipped_while_reading']} while reading the annotations), ignored {report['ignored']} folder "
          f"entr(ies) ({report['images_per_second']} images/s, Ray start "
          f"{report['seconds']['ray_start']} s not included); report: {args.output_dir}/crop_report.json")
    for item in report["skipped_items"][:20]:
        print(f"  skipped {item['path']}: {item['reason']}")
    for item in report["ignored_items"][:20]:
        print(f"  ignored {item['path']}: {item['reason']}")
    for item in report["clamped_items"][:20]:
        print(f"  clamped {item['path']}: {item['reason']}")
    for item in report["notes"][:20]:
        print(f"  note {item['path']}: {item['note']}")
    if args.show_classes:
        cropped = read_dataset(output_dir, "folder")
        write_figure(os.path.join(output_dir, "samples.png"), samples_figure(cropped, args.show_classes))  # crops: no boxes
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
