#!/usr/bin/env bash
# The main job as a user runs it (fresh local Ray, CPU): wall time and the demo's test top-1.
#   bash benchmarks/demo_job.sh [OUTPUT_DIR]
set -euo pipefail
out="${1:-/tmp/cars_ray_demo_bench}"
rm -rf "$out"
start=$(date +%s.%N)
python pipelines/train.py --config configs/demo.yaml --output-dir "$out" | tail -15
end=$(date +%s.%N)
python - "$out" "$start" "$end" <<'PY'
import json, sys
out, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
metrics = json.load(open(f"{out}/evaluation/metrics.json"))
print(json.dumps({"wall_s_including_python_and_ray_start": round(end - start, 1), "test_top1": round(metrics["top1"], 4),
                  "test_top5": round(metrics["top5"], 4), "test_images": metrics["num_images"]}))
PY
