#!/usr/bin/env bash
# GPU check of the paper segmentation protocol's speed (issue 23), under 4 minutes on an H200:
#  1. bench/segmentation_paper.py: ADE20K / Pascal / LIP presets (ViT-B/16, batch 16, 16 workers),
#     the new online step against the old one in the same run, forward FLOPs / TFLOP/s, peak
#     device memory, projected Table 4 + Figure 6 hours (target <= 12);
#  2. bench/seg_step_profile.py: torch.profiler table of the new step (top ops by CUDA time) to
#     stderr and $OUT/seg-step-profile-ade20k.txt, and per-step counts of syncs / casts / copies;
#  3. bench/seg_loader.py: loader CPU ms per ADE20K image, now vs before, identical views;
#  4. the LIP preset (the most overhead-bound) with torch.compile, new path only, if time allows;
#  5. the GPU tests of the heads and the fused loss.
# JSON lines go to stdout and $OUT/segmentation-paper.jsonl. Needs torch, timm, OpenCV, Triton.
#
#   bash bench/gpu_check_seg.sh            # from anywhere; OUT defaults to /tmp/partaware-bench-out
#   bash bench/gpu_check_seg.sh --cpu      # tiny settings on a CPU: checks the script end to end
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/partaware-bench-out}; mkdir -p "$OUT"
export OUT PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
JSONL="$OUT/segmentation-paper.jsonl"
START=$SECONDS
if [[ "${1:-}" == "--cpu" ]]; then
  export CUDA_VISIBLE_DEVICES=""
  PAPER=(--model vit_tiny_patch16_224 --presets lip ade20k --scale 0.15 --batch 2 --iters 1 --images 3 --workers 1)
  PROFILE=(--model vit_tiny_patch16_224 --scale 0.15 --batch 2 --workers 1 --warmup 1 --steps 1)
  LOADER=(--draws 4 --images 2)
  TESTS=(tests/test_seg_heads.py -k "equals_separate")
  COMPILE=(--presets lip)
  BUDGET=900
else
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
  PAPER=(--iters 20 --images 48 --workers 16)
  PROFILE=(--workers 16)
  LOADER=(--draws 50)
  TESTS=(tests/test_seg_heads.py tests/test_resized_ce.py)
  COMPILE=(--presets lip)
  BUDGET=230
fi
python3 -c "import torch, timm, cv2; print('torch', torch.__version__, 'timm', timm.__version__, 'cv2', cv2.__version__)"
left() { echo $(( BUDGET - (SECONDS - START) )); }
timeout 120 python3 bench/segmentation.py --protocol paper "${PAPER[@]}" | tee -a "$JSONL"
timeout 45 python3 bench/seg_step_profile.py "${PROFILE[@]}" | tee -a "$JSONL"
timeout 40 python3 bench/seg_loader.py "${LOADER[@]}" | tee -a "$JSONL"
if (( $(left) > 60 )); then
  timeout $(( $(left) - 30 )) python3 bench/segmentation.py --protocol paper "${PAPER[@]}" "${COMPILE[@]}" \
    --compile --no-old | tee -a "$JSONL"
fi
if (( $(left) > 10 )); then
  timeout $(( $(left) )) python3 -m pytest -q -p no:cacheprovider "${TESTS[@]}" 2>&1 | tail -4
fi
echo "gpu_check_seg: $(( SECONDS - START )) s; JSON lines in $JSONL"
