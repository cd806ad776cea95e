#!/usr/bin/env bash
# Accuracy of the recipes on the benchmark split (train on `train`, select on `val`, report `test`).
# Needs a GPU machine with ../shared/data/stanford-cars; each run prints its results table and
# writes runs/<name>/evaluation/metrics.json.
#   bash benchmarks/train_recipes.sh notebook|plain|strong|seeds
set -euo pipefail
case "${1:-strong}" in
  notebook) python pipelines/train.py --config configs/notebook.yaml --output-dir runs/bench_notebook ;;
  plain)    python pipelines/train.py --config configs/plain.yaml --output-dir runs/bench_plain ;;
  strong)   python pipelines/train.py --config configs/strong.yaml --output-dir runs/bench_strong ;;
  seeds)    for seed in 1 2; do
              python pipelines/train.py --config configs/strong.yaml --output-dir "runs/bench_strong_seed$seed" "train.seed=$seed"
            done ;;
  *) echo "usage: $0 notebook|plain|strong|seeds" >&2; exit 2 ;;
esac
