"""Write a seeded, per-class stratified train/val/test split file (path,class_id,split).

    python pipelines/split.py --root-dir R --out split.csv [--val 0.1] [--test 0.2] [--seed 0]
                              [--protocol random|official] [--drop-duplicates] [--overwrite]

The same inputs give a byte-identical file. `official` keeps the dataset's own test images
as test and carves validation from its training images. An existing --out file is replaced only
with --overwrite, and never when it replaces one of the dataset's files (a new file beside the
images is fine). Every class keeps at least one training row (where the rounded parts would take
all its images, validation gives way first, then test); classes too small to give a requested
validation or test row, or left without a training row, are named in a warning with their counts.
Exact copies of an image (identical bytes) always land in one split; --drop-duplicates keeps only
the first copy (by path) of each, counting and naming the rest. Rows of the data that are not split
(unlabelled, unreadable annotations, ignored files) are counted and named on the console.
"""

from __future__ import annotations

from cars_ray.cli import EXIT_OK, check_number, make_parser, run_main
from cars_ray.data.layouts import LAYOUTS, dataset_files, read_dataset
from cars_ray.data.split import (PROTOCOLS, drop_duplicates, exact_duplicates, keep_copies_together, split_warnings,
                                 stratified_split, write_split)
from cars_ray.outputs import check_earlier_file, check_output_path


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--root-dir", required=True, help="dataset folder, a CSV manifest file, or demo (the sample shipped in the package)")
    parser.add_argument("--out", required=True, help="split file to write")
    parser.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS)
    parser.add_argument("--val", type=float, default=0.1, help="validation fraction per class (default 0.1)")
    parser.add_argument("--test", type=float, default=0.2, help="test fraction per class, random protocol (default 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", default="random", choices=PROTOCOLS)
    parser.add_argument("--drop-duplicates", action="store_true",
                        help="leave out the second and later exact copy (identical bytes) of each image")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    check_number(args.val, "--val", 0, 1)
    check_number(args.test, "--test", 0, 1)

    manifest = read_dataset(args.root_dir, args.layout)
    # A split file beside the images is the usual place; it must only not replace one of the dataset's files.
    out = check_output_path(args.out, "file", [args.root_dir, manifest.root], "--out", reads=dataset_files(manifest))
    check_earlier_file(out, args.overwrite, "--out")
    for line in manifest.reading_summary():
        print(line)
    groups = exact_duplicates(manifest)
    if groups and args.drop_duplicates:
        manifest, dropped = drop_duplicates(manifest, groups)
        print(f"dropped {len(dropped)} exact duplicate(s) of {len(groups)} image(s) (the first copy by path kept): "
              + ", ".join(dropped[:10]) + (f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""))
        groups = []
    split = stratified_split(manifest, args.val, args.test, args.seed, args.protocol)
    if groups:
        split, moved = keep_copies_together(split, groups)
        print(f"{len(groups)} group(s) of exact duplicates kept in one split each ({moved} row(s) moved, swapped with "
              "an image of the same class so per-class counts hold); --drop-duplicates leaves the copies out")
    for warning in split_warnings(split, manifest.class_names, args.val, args.test if args.protocol == "random" else None):
        print(f"warning: {warning}")
    write_split(split, out)
    counts = split.split.value_counts()
    print(f"wrote {args.out}: " + ", ".join(f"{name} {int(counts.get(name, 0))}" for name in ("train", "val", "test")))
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
