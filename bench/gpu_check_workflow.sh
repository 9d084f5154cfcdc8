#!/usr/bin/env bash
# The workflow as a user runs it on a GPU machine (`snakemake --cores N`, about 3 minutes on an
# H200), then each GPU job's rate beside the bench's for the same setting, as ONE JSON line.
#
#   bash bench/gpu_check_workflow.sh [WHEELS]     # from anywhere; WHEELS defaults to .whl/
#
# The machine needs Python 3.12 with torch, timm, OpenCV, h5py, pandas, scikit-learn; what it
# lacks (snakemake, zarr, jsonschema, ...) is installed with no package index from the wheels in
# WHEELS (bench/fetch_wheels.sh fetches them) into $SITE, put on PYTHONPATH. A `partaware` shim
# on PATH runs `python3 -m partaware.cli` (no `pip install` of the project).
#
# Generated config: ViT-B/16 with random weights; 1,200 CUB-layout images (retrieval + linear
# probe: three extract jobs); a segmentation demo of 200 + 30 images at the ADE20K preset with
# heads of 209 + 59 classes, 400 iterations (one segment job). Output: $OUT/workflow.jsonl (the
# benches' lines and the summary), the run's log in $OUT/snakemake.log.
# Smaller settings (e.g. a CPU smoke run): MODEL, IMAGES, SEG_TRAIN, SEG_VAL, SEG_SIZE, ITERS,
# PIPELINE (a preset or a {crop, ...} mapping), SIZE, CORES.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WHEELS=${1:-${WHEELS:-.whl}}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/partaware-bench-out}
SITE=${SITE:-/tmp/partaware-site}
WORK=${WORK:-/tmp/partaware-workflow-check}
CORES=${CORES:-$(nproc)}
MODEL=${MODEL:-vit_base_patch16_224}
SIZE=${SIZE:-224}
IMAGES=${IMAGES:-1200}
SEG_TRAIN=${SEG_TRAIN:-200}
SEG_VAL=${SEG_VAL:-30}
SEG_SIZE=${SEG_SIZE:-512}
ITERS=${ITERS:-400}
PIPELINE=${PIPELINE:-ade20k}
BATCH=128
SEG_BATCH=16
mkdir -p "$OUT"
: > "$OUT/workflow.jsonl"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
step() { echo; echo "== [+$(( $(date +%s) - T0 ))s] $*"; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "cpus: $(nproc), --cores $CORES"

step "packages (no index: wheels from $WHEELS)"
if ! $PY -c "import snakemake, zarr, jsonschema" 2>/dev/null; then
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHEELS: run bench/fetch_wheels.sh where an index is reachable"; exit 1; }
    $PY -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl || exit 1
fi
export PYTHONPATH="$REPO/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
SHIMS="$SITE/shims"
mkdir -p "$SHIMS"
printf '#!/usr/bin/env bash\nexec %s -m partaware.cli "$@"\n' "$PY" > "$SHIMS/partaware"
printf '#!/usr/bin/env bash\nexec %s -m snakemake "$@"\n' "$PY" > "$SHIMS/snakemake"
chmod +x "$SHIMS/partaware" "$SHIMS/snakemake"
export PATH="$SHIMS:$PATH"
$PY -c "import snakemake, zarr, torch, timm, cv2; print('snakemake', snakemake.__version__, 'zarr', zarr.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1

step "config: $MODEL, $IMAGES CUB-layout images, segmentation $SEG_TRAIN + $SEG_VAL at $PIPELINE, $ITERS iterations"
rm -rf "$WORK"; mkdir -p "$WORK"
cat > "$WORK/config.yaml" <<EOF
seed: 0
device: auto
gpu_threads: $CORES
cache: {format: zarr, dtype: float16, chunk_rows: 1024}
extract: {batch_size: $BATCH, num_workers: auto, shards: 1, precision: auto}
datasets:
  parts:
    kind: cub
    demo: {n_images: $IMAGES, seed: 0, image_size: [500, 375]}
    size: $SIZE
    resize: $(( SIZE * 256 / 224 ))
    tasks: [retrieval, linear]
  seg:
    kind: segfolder
    demo: {n_train: $SEG_TRAIN, n_val: $SEG_VAL, size: $SEG_SIZE, seed: 0}
    label_sets:
      part: {dir: ann, classes: 209}
      object: {dir: ann_object, classes: 59}
    size: $SEG_SIZE
    blocks: [4, 6, 8, 12]
    pipeline: $PIPELINE
    tasks: [segmentation]
models:
  vitb: {arch: $MODEL, weights: random, seed: 0, group: random}
linear: {epochs: 30, seeds: [0]}
segmentation: {protocol: paper, iters: $ITERS, batch_size: $SEG_BATCH, warmup_iters: 50, num_workers: auto,
               log_every_s: 5, checkpoint_every: 100000}
stats: {bootstrap: 200}
EOF

step "snakemake --cores $CORES (the workflow as a user runs it)"
W0=$(date +%s)
( cd "$WORK" && timeout 900 snakemake -s "$REPO/Snakefile" --configfile config.yaml --cores "$CORES" ) \
    > "$OUT/snakemake.log" 2>&1
rc=$?
WALL=$(( $(date +%s) - W0 ))
tail -5 "$OUT/snakemake.log"
echo "snakemake exit $rc after ${WALL}s"

step "the benches at the same settings"
timeout 300 $PY bench/extract.py --model "$MODEL" --size "$SIZE" --batch-size $BATCH --workers $(( CORES - 1 )) \
    --precision auto --images "$IMAGES" --baseline-images 100 --format zarr | tee -a "$OUT/workflow.jsonl"
timeout 300 $PY bench/segmentation_paper.py --model "$MODEL" --presets ade20k --workers $(( CORES - 1 )) \
    --batch $SEG_BATCH | tee -a "$OUT/workflow.jsonl"

step "each GPU job's rate beside the bench's"
$PY bench/workflow_rates.py "$WORK/results" --bench "$OUT/workflow.jsonl" --seg-batch $SEG_BATCH --wall-s "$WALL" \
    | tee -a "$OUT/workflow.jsonl"
exit $rc
