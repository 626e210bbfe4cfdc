#!/usr/bin/env bash
# The benchmark's throughput section on CUDA: adds a "gpu" block to bench/results.json and
# re-renders bench/RESULTS.md (run `make bench` first for the CPU figures; without an
# existing results.json only the gpu block is written).
#
# What runs on the GPU: the Flipkart level-1 model is fitted (CUDA for the char-CNN and the
# CNN embeddings), then cold / warm nightly runs and the CNN-forward limit are measured with
# image.device=cuda -- bf16 autocast and channels_last in the backbone -- plus a batched GPU
# JPEG decode pipeline (torchvision.io.decode_jpeg(device='cuda') -> letterbox on the device
# -> forward), reported as throughput.gpu_decode_pipeline.
#
#   bench/gpu.sh [OUT_DIR]          (default OUT_DIR: bench)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench}"
BIN="${BIN:-.venv/bin}"
if [ ! -x "$BIN/python" ] || ! "$BIN/python" -c 'import catalog_classifier' 2>/dev/null; then
  make install
fi
if ! "$BIN/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "bench/gpu.sh: no CUDA device visible to torch; nothing measured" >&2
  exit 3
fi
"$BIN/python" - <<'PY'
import torch, torchvision
from torchvision.io import decode_jpeg
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"{torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
PY
exec "$BIN/python" -m bench --gpu --out "$OUT" --work out/bench-work-gpu
