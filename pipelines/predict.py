"""Predict car classes for files, folders, globs or a box manifest with Ray Data (GPUs when present).

    python pipelines/predict.py --checkpoint C --input PATH [PATH ...] [--output preds.csv] [--topk 5] [--tta]
                                [--overwrite]
    python pipelines/predict.py --checkpoint C --manifest boxes.csv [--box-frame stored|upright] ...

One row per image (per manifest row): path, class_id, class_name, probability, topk (JSON), box, error.
``box`` is the crop classified, "left,top,right,bottom" in pixels of the upright photo (the manifest's box grown
by the model's box_margin and clamped to the photo, as training cropped), empty for the whole photo. Unreadable
inputs, and boxes wholly outside their photo, become rows with an error; they never stop the run. A manifest
row that is malformed stops it before any work (exit 2, naming file:line and field, with the count of bad rows).
An --input that exists is taken
literally (names with [ ] * ? spaces, a leading -, any script); one that does not is expanded as a glob. C may also be an exported .onnx file.
The checkpoint and the output path are checked before any inference starts; an existing output
file is replaced only with --overwrite.
"""

from __future__ import annotations

import os
import sys

from cars_ray.cli import EXIT_OK, make_parser, run_main
from cars_ray.config import BOX_FRAMES
from cars_ray.evaluate.batch_predict import expand_inputs, predict_files, read_box_manifest
from cars_ray.inference.model import check_model
from cars_ray.data.layouts import resolve_root
from cars_ray.outputs import check_earlier_file, check_output_path, write_csv
from cars_ray.runtime import add_ray_arguments, check_ray_arguments, init_ray


def literal_input_paths(argv: list[str]) -> list[str]:
    """argv with each existing file after --input whose name starts with "-" written as "./-name":
    argparse would read it as an option, yet a path that exists is always taken as a path."""
    result, in_input = [], False
    for token in argv:
        if in_input and token.startswith("-") and token != "-" and os.path.exists(token):
            token = os.path.join(".", token)
        elif token.startswith("-"):
            in_input = token == "--input"
        result.append(token)
    return result


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory or exported .onnx file")
    photos = parser.add_mutually_exclusive_group(required=True)
    photos.add_argument("--input", nargs="+", help="image files, folders or globs")
    photos.add_argument("--manifest", help="CSV with the header path,x1,y1,x2,y2: photos (relative to the CSV's "
                                           "folder) and the box of the car in each; empty box cells: the whole photo")
    parser.add_argument("--box-frame", choices=BOX_FRAMES, default=None,
                        help="the frame of the manifest's boxes: stored pixels of the file or upright (after EXIF "
                             "orientation); default: the frame the model was trained with (its data.box_frame)")
    parser.add_argument("--output", default="predictions.csv")
    parser.add_argument("--topk", type=int, default=None, help="classes listed per image (default 5, or all if fewer)")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    add_ray_arguments(parser)
    args = parser.parse_args(literal_input_paths(sys.argv[1:] if argv is None else list(argv)))

    meta = check_model(args.checkpoint)  # an unusable checkpoint or .onnx file fails here, in one sentence
    if args.manifest:
        paths, boxes = read_box_manifest(args.manifest)
        inputs = [args.manifest]
    else:
        paths, boxes, inputs = expand_inputs(args.input), None, list(map(resolve_root, args.input))
    # The CSV may go beside the images; it must not replace one of them or a checkpoint file.
    reads = paths + ([os.path.join(args.checkpoint, name) for name in os.listdir(args.checkpoint)]
                     if os.path.isdir(args.checkpoint) else [])
    output = check_output_path(args.output, "file", [args.checkpoint, *inputs], "--output", reads=reads)
    check_earlier_file(output, args.overwrite, "--output")
    check_ray_arguments(args)
    init_ray(args)
    predictions = predict_files(args.checkpoint, paths, args.topk, args.tta, meta, boxes=boxes,
                                box_frame=args.box_frame)  # topk None: min(5, classes)
    write_csv(output, predictions)
    failed = int((predictions.error != "").sum())
    cropped = f", {int((predictions.box != '').sum())} cropped to their box" if boxes else ""
    counted = "manifest rows" if boxes else "images"  # a manifest may name one photo in several rows (boxes)
    print(f"wrote {args.output}: {len(predictions)} {counted}{cropped}, {failed} with an error")
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
