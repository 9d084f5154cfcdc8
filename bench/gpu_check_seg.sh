#!/usr/bin/env bash
# GPU check for the segmentation probe (issue "Part and object segmentation probes"): the fused
# loss against the unfused one on the GPU (tests/test_resized_ce.py, incl. 209 classes at
# 512 x 512), then the probe-vs-backbone bench at 209, 59 and 19 classes, each printing the
# fused and unfused probe iteration measured in the same run. About 2 minutes on an H100/H200.
#
#   bash bench/gpu_check_seg.sh      # from the repository root; JSON lines -> $OUT/segmentation.jsonl
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/partaware-bench-out}; mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_resized_ce.py tests/test_evals_segmentation.py 2>&1 | tail -6
for cls in 209 59 19; do
  for prec in fp32 bf16; do
    timeout 90 python3 bench/segmentation.py --classes $cls --probe-precision $prec | tee -a "$OUT/segmentation.jsonl"
  done
done
# The paper protocol's online step (decode + mmseg augmentation in workers, frozen ViT-B forward at
# the crop, heads) and the projected H200-hours of Table 4 + Figure 6; needs OpenCV on the device
# (pip install a cp312 opencv-python-headless wheel carried with the tree if it is missing).
python3 -c "import cv2" 2>/dev/null || pip install -q --no-index --find-links bench/wheels opencv-python-headless 2>&1 | tail -1
timeout 240 python3 bench/segmentation.py --protocol paper | tee -a "$OUT/segmentation.jsonl"
