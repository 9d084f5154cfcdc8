#!/usr/bin/env bash
# GPU check for the k-NN task (issue 24): the exactness tests on the GPU faiss index, then
# bench/knn.py at ImageNet size (target on an H200: <= 60 s per encoder and feature, store read
# included). Needs a faiss with GPUs: wheels in .whl/ (e.g. faiss-gpu-cu12 and its nvidia-*
# needs, for the machine's python) are installed into /tmp/site first when present.
#
#   bash bench/gpu_check_knn.sh      # from the repository root (~3-5 min)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/partaware-bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
$PY -c "from partaware.evals.neighbours import faiss_build; print(faiss_build())" || exit 1
failed=()
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_evals_knn.py 2>&1 | tee "$OUT/pytest-knn.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=(pytest)
timeout 400 $PY bench/knn.py --n 1281167 --queries 50000 --workdir /tmp/partaware-bench-knn | tee -a "$OUT/bench.jsonl"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=(bench-knn)
rm -rf /tmp/partaware-bench-knn
[ ${#failed[@]} -eq 0 ] && echo "all steps passed" || { echo "FAILED: ${failed[*]}"; exit 1; }
