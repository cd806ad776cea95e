#!/usr/bin/env bash
# Issue #6 speed target: the same 30-epoch, 384 px plain fine-tuning of Lite2 on the benchmark split,
# timm's train.py against cars_ray (Ray start, decoding, per-epoch validation and the final test
# evaluation all included in ours), run back to back on the same machine.
#   bash benchmarks/speed_vs_timm.sh TIMM_DIR [OUT_DIR]
# TIMM_DIR holds train.py and validate.py of timm's source at the installed version.
set -euo pipefail
timm_dir="${1:?usage: $0 TIMM_DIR [OUT_DIR]}"
out="${2:-runs/speed_vs_timm}"
mkdir -p "$out"
python benchmarks/timm_reference.py --timm-dir "$timm_dir" --work "$out/timm"
start=$(date +%s.%N)
python pipelines/train.py --config configs/plain.yaml --output-dir "$out/cars_ray" 2>&1 | tee "$out/cars_ray.log"
end=$(date +%s.%N)
python - "$out" "$start" "$end" <<'PY'
import json, sys
out, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
timm = json.load(open(f"{out}/timm/result.json"))
ours = json.load(open(f"{out}/cars_ray/evaluation/metrics.json"))
result = {"timm_seconds": timm["train_wall_seconds"], "cars_ray_seconds": round(end - start, 1),
          "ratio": round((end - start) / timm["train_wall_seconds"], 3),
          "timm_test_top1": timm["test_top1"], "cars_ray_test_top1": ours["top1"]}
json.dump(result, open(f"{out}/result.json", "w"), indent=2)
print(json.dumps(result))
PY
