"""Write a seeded, per-class stratified train/val/test split file (path,class_id,split).

    python pipelines/split.py --root-dir R --out split.csv [--val 0.1] [--test 0.2] [--seed 0]
                              [--protocol random|official]

The same inputs give a byte-identical file. `official` keeps the dataset's own test images
as test and carves validation from its training images.
"""

from __future__ import annotations

from cars_ray.cli import EXIT_OK, make_parser, run_main
from cars_ray.data.layouts import LAYOUTS, read_dataset
from cars_ray.data.split import PROTOCOLS, stratified_split
from cars_ray.outputs import write_csv


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--root-dir", required=True, help="dataset folder, or a CSV manifest file")
    parser.add_argument("--out", required=True, help="split file to write")
    parser.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS)
    parser.add_argument("--val", type=float, default=0.1, help="validation fraction per class (default 0.1)")
    parser.add_argument("--test", type=float, default=0.2, help="test fraction per class, random protocol (default 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", default="random", choices=PROTOCOLS)
    args = parser.parse_args(argv)

    manifest = read_dataset(args.root_dir, args.layout)
    split = stratified_split(manifest, args.val, args.test, args.seed, args.protocol)
    write_csv(args.out, split[["path", "class_id", "split"]])
    counts = split.split.value_counts()
    print(f"wrote {args.out}: " + ", ".join(f"{name} {int(counts.get(name, 0))}" for name in ("train", "val", "test")))
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
