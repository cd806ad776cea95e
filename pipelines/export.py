"""Export a checkpoint to ONNX (class names and preprocessing embedded) and verify it against PyTorch.

    python pipelines/export.py --checkpoint C --format onnx --out model.onnx [--tolerance 1e-3] [--overwrite]
    python pipelines/export.py --checkpoint C --out model.int8.onnx --int8 [--calibration-dir DIR]
        [--calibration-images 300] [--root-dir R --split-file S [--check-split val]] [--max-drop 1.0]

The graph takes uint8 images (batch, resize, resize, 3) and holds the evaluation view in front of
the model. After export, onnxruntime and PyTorch (fp32, CPU) score the same batch of images
(--images, or the demo sample shipped in the package); both the largest absolute logit difference
and the top-1 agreement are printed, and the command fails (exit 1, nothing written) unless the
difference is at most --tolerance and every top-1 agrees. An existing --out file is replaced only
with --overwrite.

With --int8 the checked fp32 graph is then quantised statically (QDQ: per-channel int8 weights,
uint8 activations whose ranges come from --calibration-images images of --calibration-dir, or, when
it is not given, of the train rows of --root-dir/--split-file) with ONNX Runtime's tools. fp32 and int8 are compared on labelled
images when --root-dir and --split-file are given (the --check-split rows, val by default: never
test rows, which are kept for the final figure): top-1 agreement and each one's top-1. Without
labels the comparison is on the --images/demo images and the loss counted is the share of changed
answers. A model that loses more than --max-drop points of top-1 is refused (exit 1, nothing
written). The metadata (class names, preprocessing) travels as with fp32.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

from cars_ray.checkpoint import CheckpointMeta, check_classes, read_meta
from cars_ray.cli import EXIT_FAILED, EXIT_OK, check_number, make_parser, run_main
from cars_ray.data.layouts import read_dataset, resolve_root
from cars_ray.data.loading import decode_batch
from cars_ray.data.split import SPLITS, apply_split, read_split_file
from cars_ray.errors import DataError
from cars_ray.evaluate.batch_predict import expand_inputs
from cars_ray.export import compare_int8, quantize_int8
from cars_ray.inference.onnx import PARITY_TOLERANCE, export_checked, parity_images
from cars_ray.outputs import check_earlier_file, check_output_path
from cars_ray.preprocessing import Preprocessing
from cars_ray.runtime import WarningCount, configure_logging


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--format", default="onnx", choices=("onnx",))
    parser.add_argument("--out", required=True)
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE, help="max absolute logit difference (fp32)")
    parser.add_argument("--images", nargs="*", default=None, help="images for the check (default: the demo sample)")
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--int8", action="store_true", help="quantise to int8 (static, QDQ) after the fp32 check")
    parser.add_argument("--calibration-dir", default=None, help="images whose activations set the int8 ranges")
    parser.add_argument("--calibration-images", type=int, default=300, help="how many of them (spread evenly)")
    parser.add_argument("--root-dir", default=None, help="labelled dataset for the fp32/int8 comparison")
    parser.add_argument("--split-file", default=None, help="path,class_id,split file of --root-dir")
    parser.add_argument("--check-split", default="val", choices=SPLITS, help="rows of --split-file to compare on")
    parser.add_argument("--max-drop", type=float, default=1.0, help="most points of top-1 int8 may lose")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--verbose", action="store_true",
                        help="also show the libraries' log lines (onnxruntime's quantizer) on the console")
    args = parser.parse_args(argv)
    check_number(args.tolerance, "--tolerance")
    check_number(args.num_images, "--num-images", minimum=1)
    check_number(args.calibration_images, "--calibration-images", minimum=1)
    check_number(args.max_drop, "--max-drop")
    if bool(args.root_dir) != bool(args.split_file):
        parser.error("--root-dir and --split-file go together (the labelled rows to compare fp32 and int8 on)")
    if args.int8 and not (args.calibration_dir or args.root_dir):
        parser.error("--int8 needs --calibration-dir (a folder of images) or --root-dir/--split-file (their train rows)")

    meta = read_meta(args.checkpoint)  # once for the whole command
    labelled = labelled_table(args.root_dir, args.split_file, meta) if args.root_dir else None
    inputs = [args.checkpoint, *(args.images or []), args.calibration_dir and resolve_root(args.calibration_dir),
              args.root_dir and resolve_root(args.root_dir), args.split_file]
    out = check_output_path(args.out, "file", inputs, "--out")
    check_earlier_file(out, args.overwrite, "--out")
    # The quantizer logs a warning per clipped bias through the root logger: off the console, counted.
    configure_logging(args.verbose, None)
    library_warnings = WarningCount()
    logging.getLogger().addHandler(library_warnings)
    try:
        return export_and_check(args, out, meta, labelled, library_warnings)
    finally:
        logging.getLogger().removeHandler(library_warnings)


def export_and_check(args, out: str, meta: CheckpointMeta, labelled, library_warnings: WarningCount) -> int:
    """Export, check and (with --int8) quantise into a temporary folder beside ``out``; rename onto ``out``
    only when every check holds. Returns the exit code."""
    preprocessing = meta.preprocessing
    images = parity_images(preprocessing, expand_inputs(args.images) if args.images else None, args.num_images)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(out), prefix=".export-") as work:
        fp32 = os.path.join(work, "fp32.onnx")  # becomes --out (or its int8 form) only once every check holds
        report = export_checked(args.checkpoint, fp32, images, args.tolerance, meta)
        print(f"exported {report.onnx_bytes / 1e6:.1f} MB of fp32 ONNX; on {report.num_images} images: "
              f"max |logit difference| {report.max_abs_logit_diff:.2e} (limit {args.tolerance:g}), "
              f"top-1 agreement {report.top1_agreement:.3f}")
        if not report.holds(args.tolerance):
            print(f"error: the ONNX model does not match PyTorch within the limits; {args.out} was not written")
            return EXIT_FAILED
        result = fp32
        if args.int8:
            result = os.path.join(work, "int8.onnx")
            kept = quantize_checked(args, preprocessing, fp32, result, images, labelled)
            if library_warnings.count and not args.verbose:
                print(f"note: the libraries logged {library_warnings.count} warning(s) while quantising, e.g. "
                      f"\"{library_warnings.first}\"; --verbose shows them")
            if not kept:
                return EXIT_FAILED
        os.replace(result, out)
    print(f"wrote {args.out} ({os.path.getsize(out) / 1e6:.1f} MB)")
    return EXIT_OK


def quantize_checked(args, preprocessing: Preprocessing, fp32: str, int8: str, demo_images: np.ndarray,
                     labelled) -> bool:
    """Quantise ``fp32`` into ``int8`` and compare them; False (after saying why) when int8 loses too much.
    ``labelled``: the rows of --root-dir/--split-file (:func:`labelled_table`), or None."""
    if args.calibration_dir:
        paths = expand_inputs([args.calibration_dir])
        chosen = sorted(set(np.linspace(0, len(paths) - 1, min(args.calibration_images, len(paths))).round().astype(int)))
        calibration = np.stack([preprocessing.decode(paths[i]) for i in chosen])
    else:
        calibration, _ = labelled_images(labelled, args.split_file, "train", preprocessing, args.calibration_images)
    quantize_int8(fp32, int8, calibration)
    images, labels, where = demo_images, None, "the check images (no labels: counting changed answers)"
    if args.root_dir:
        images, labels = labelled_images(labelled, args.split_file, args.check_split, preprocessing)
        where = f"{len(labels)} {args.check_split!r} images of {args.split_file}"
    report = compare_int8(fp32, int8, images, labels)
    scores = "" if labels is None else f"; top-1 fp32 {report.fp32_top1:.4f}, int8 {report.int8_top1:.4f}"
    print(f"int8 ({len(calibration)} calibration images, {os.path.getsize(int8) / 1e6:.1f} MB) on {where}: "
          f"top-1 agreement {report.agreement:.4f}{scores}; {points_changed(report.drop_points)} (limit {args.max_drop:g} lost)")
    if report.drop_points > args.max_drop:
        print(f"error: the int8 model loses {report.drop_points:.2f} points of top-1, more than --max-drop "
              f"{args.max_drop:g}; {args.out} was not written (calibrate on more, or more typical, images)")
        return False
    return True


def points_changed(drop: float) -> str:
    """"0.38 points lost" or, when int8 scored better, "2.50 points gained" (never "-2.50 points lost")."""
    return f"{drop:.2f} points lost" if drop >= 0 else f"{-drop:.2f} points gained"


def labelled_table(root_dir: str, split_file: str, meta: CheckpointMeta):
    """The rows of ``root_dir`` with their ``split`` from ``split_file``, read before any work starts.

    The checkpoint's classes must be the dataset's (``check_classes``, as evaluate.py checks them):
    scoring a model against labels of other classes would compare unlike with unlike. Raises
    CheckpointError / DataError in one sentence."""
    manifest = read_dataset(root_dir, "auto")
    check_classes(meta, manifest.class_names, root_dir)
    return apply_split(manifest, read_split_file(split_file), split_file)


def labelled_images(table, split_file: str, split: str, preprocessing: Preprocessing,
                    at_most: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The decoded images (uint8, N x size x size x 3) and class indices (int, N) of one split's rows of
    ``table`` (:func:`labelled_table`; ``at_most``: that many, spread evenly)."""
    rows = table[table.split == split]
    if rows.empty:
        raise DataError(f"split file {split_file} has no {split!r} rows")
    if at_most and len(rows) > at_most:
        rows = rows.iloc[np.linspace(0, len(rows) - 1, at_most).round().astype(int)]
    decoded = decode_batch(rows.assign(row_id=np.arange(len(rows))), preprocessing)  # crops to boxes as training did
    return decoded["image"], decoded["label"]


if __name__ == "__main__":
    run_main(main)
