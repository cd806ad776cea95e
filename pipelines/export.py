"""Export a checkpoint to ONNX (class names and preprocessing embedded) and verify it against PyTorch.

    python pipelines/export.py --checkpoint C --format onnx --out model.onnx [--tolerance 1e-3] [--overwrite]

The graph takes uint8 images (batch, resize, resize, 3) and holds the evaluation view in front of
the model. After export, onnxruntime and PyTorch (fp32, CPU) score the same batch of images
(--images, or the demo sample shipped in the package); both the largest absolute logit difference
and the top-1 agreement are printed, and the command fails (exit 1, file removed) unless the
difference is at most --tolerance and every top-1 agrees. An existing --out file is replaced only
with --overwrite.
"""

from __future__ import annotations

import os

import numpy as np

from cars_ray.checkpoint import preprocessing_of, read_meta
from cars_ray.cli import EXIT_FAILED, EXIT_OK, check_number, make_parser, run_main
from cars_ray.config import DEMO_ROOT
from cars_ray.data.loading import resolve_root
from cars_ray.evaluate.batch_predict import expand_inputs
from cars_ray.export import check_parity, export_onnx
from cars_ray.outputs import check_earlier_output, check_output_path


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--format", default="onnx", choices=("onnx",))
    parser.add_argument("--out", required=True)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max absolute logit difference (fp32)")
    parser.add_argument("--images", nargs="*", default=None, help="images for the check (default: the demo sample)")
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    check_number(args.tolerance, "--tolerance")
    check_number(args.num_images, "--num-images", minimum=1)

    preprocessing = preprocessing_of(read_meta(args.checkpoint), args.checkpoint)
    out = check_output_path(args.out, "file", [args.checkpoint, *(args.images or [])], "--out")
    check_earlier_output(os.path.dirname(out), [os.path.basename(out)], False, args.overwrite, "the folder of --out",
                         can_resume=False)
    paths = expand_inputs(args.images or [resolve_root(DEMO_ROOT)])[: args.num_images]
    images = np.stack([preprocessing.decode(p) for p in paths])
    candidate = f"{out}.unchecked-{os.getpid()}.onnx"  # becomes --out only once the parity check holds
    try:
        export_onnx(args.checkpoint, candidate)
        report = check_parity(args.checkpoint, candidate, images)
        print(f"exported {args.out} ({os.path.getsize(candidate) / 1e6:.1f} MB); on {report.num_images} images: "
              f"max |logit difference| {report.max_abs_logit_diff:.2e} (limit {args.tolerance:g}), "
              f"top-1 agreement {report.top1_agreement:.3f}")
        if not report.holds(args.tolerance):
            print(f"error: the ONNX model does not match PyTorch within the limits; {args.out} was not written")
            return EXIT_FAILED
        os.replace(candidate, out)
    finally:
        if os.path.exists(candidate):
            os.remove(candidate)
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
