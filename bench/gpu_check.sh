#!/usr/bin/env bash
# GPU checks for "GPU throughput: extraction near the encoder's own speed, retrieval at scale".
#
#   bash bench/gpu_check.sh          # from the repository root, on a CUDA machine (~3-4 min)
#
# Needs python3 with torch, torchvision, timm, h5py, pandas, pyarrow, scikit-learn, pytest,
# hypothesis; NOT zarr, faiss, snakemake or jsonschema (stores are HDF5 here). Each step has its
# own time limit (7 min 20 s in all at worst). Every bench JSON line goes to $OUT/bench.jsonl (OUT
# defaults to /tmp/partaware-bench-out) and is echoed at the end; pytest's log to $OUT/pytest.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/partaware-bench-out}
mkdir -p "$OUT"
: > "$OUT/bench.jsonl"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T0=$(date +%s)
step() { echo; echo "== [+$(( $(date +%s) - T0 ))s] $*"; }
failed=()

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "cpus: $(nproc)"; df -h /dev/shm | tail -1
$PY -c "import sys, torch, torchvision, timm, h5py, pandas, sklearn; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"

step "install (no deps, no build isolation: nothing can be fetched)"
if ! $PY -m pip install -q --no-deps --no-build-isolation -e . ; then
    echo "pip install -e . failed; using PYTHONPATH=src"
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY -c "import partaware.extract, partaware.evals.retrieval, partaware.store; print('partaware imports without zarr/faiss')" \
    || failed+=(import)

step "tests (extraction, benches, retrieval AP, k-NN: skipped without faiss)"
timeout 150 $PY -m pytest -q -p no:cacheprovider -rs tests/test_extract.py tests/test_bench.py \
    tests/test_evals_retrieval.py tests/test_evals_knn.py 2>&1 | tee "$OUT/pytest.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=(pytest)

step "bench/extract.py: ViT-B/16 at 224, bf16, 16000 images (b), 2000 images (c)"
timeout 170 $PY bench/extract.py --model vit_base_patch16_224 --size 224 --batch-size 128 --precision auto \
    --images 16000 --baseline-images 2000 --check-nvjpeg --workdir /tmp/partaware-bench-extract \
    | tee -a "$OUT/bench.jsonl"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=(bench-extract)
rm -rf /tmp/partaware-bench-extract

step "bench/retrieval.py: N=50,000 D=768"
timeout 100 $PY bench/retrieval.py --n 50000 --dim 768 | tee -a "$OUT/bench.jsonl"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=(bench-retrieval)

step "done"
echo "== $OUT/bench.jsonl"
cat "$OUT/bench.jsonl"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
