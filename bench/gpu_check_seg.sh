#!/usr/bin/env bash
# Second GPU pass: the extraction tests (tolerant comparisons) and the segmentation-probe bench.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/partaware-bench-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . || export PYTHONPATH="$PWD/src"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_extract.py 2>&1 | tail -6
for cls in 209 59 19; do
  for prec in fp32 bf16; do
    timeout 60 python3 bench/segmentation.py --classes $cls --probe-precision $prec | tee -a "$OUT/segmentation.jsonl"
  done
done
