"""Export a checkpoint to ONNX (class names and preprocessing embedded) and verify it against PyTorch.

    python pipelines/export.py --checkpoint C --format onnx --out model.onnx [--tolerance 1e-3]

After export, onnxruntime and PyTorch (fp32, CPU) score the same batch of images (--images, or the
demo sample shipped in the package); both the largest absolute logit difference and the top-1
agreement are printed, and the command fails (exit 1, file removed) unless the difference is at
most --tolerance and every top-1 agrees.
"""

from __future__ import annotations

import os

import numpy as np

from cars_ray.cli import EXIT_FAILED, EXIT_OK, make_parser, run_main
from cars_ray.config import DEMO_ROOT
from cars_ray.data.images import load_array
from cars_ray.data.loading import resolve_root
from cars_ray.evaluate.batch_predict import expand_inputs
from cars_ray.export import check_parity, export_onnx
from cars_ray.train.checkpoint import read_meta


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--format", default="onnx", choices=("onnx",))
    parser.add_argument("--out", required=True)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max absolute logit difference (fp32)")
    parser.add_argument("--images", nargs="*", default=None, help="images for the check (default: the demo sample)")
    parser.add_argument("--num-images", type=int, default=16)
    args = parser.parse_args(argv)

    meta = read_meta(args.checkpoint)
    size = meta["preprocessing"]["resize"]
    paths = expand_inputs(args.images or [resolve_root(DEMO_ROOT)])[:: max(1, 1)][: args.num_images]
    images = np.stack([load_array(p, None, size) for p in paths])
    export_onnx(args.checkpoint, args.out)
    report = check_parity(args.checkpoint, args.out, images)
    print(f"exported {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB); on {report.num_images} images: "
          f"max |logit difference| {report.max_abs_logit_diff:.2e} (limit {args.tolerance:g}), "
          f"top-1 agreement {report.top1_agreement:.3f}")
    if not report.holds(args.tolerance):
        os.remove(args.out)
        print(f"error: the ONNX model does not match PyTorch within the limits; {args.out} removed")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    run_main(main)
