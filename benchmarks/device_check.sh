#!/usr/bin/env bash
# The GPU checks of issue 10 as one script, for a machine with CUDA (a few minutes):
#   1. benchmarks/gpu_smoke.py: training/inference images/s of the paper's models, float32 and
#      bf16 autocast + channels_last, and ModelGuard-W rows/s on the GPU against the CPU;
#   2. the tests marked gpu (ModelGuard-W, ModelGuard-S and the recovery table on CUDA, amp);
#   3. benchmarks/table_cost.py: hours per paper table from those throughputs.
#
#   bash benchmarks/device_check.sh [out_dir]      # out_dir [$OUT, else ./device-check]
# Writes gpu.json, gpu_smoke.txt, pytest_gpu.txt and table_hours.md into out_dir; exits non-zero
# when a step fails (the others still run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-device-check}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python}
status=0
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "no CUDA device: run benchmarks/gpu_smoke.py --device cpu for the CPU figures" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/nvidia_smi.txt" 2>&1
timeout 300 "$PY" benchmarks/gpu_smoke.py --json "$OUT_DIR/gpu.json" 2>&1 | tee "$OUT_DIR/gpu_smoke.txt" || status=1
timeout 240 "$PY" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tail -15 | tee "$OUT_DIR/pytest_gpu.txt" || status=1
if [[ -s $OUT_DIR/gpu.json ]]; then
  { echo "# float32"; "$PY" benchmarks/table_cost.py --throughput "$OUT_DIR/gpu.json"
    echo; echo "# bf16 autocast + channels_last"; "$PY" benchmarks/table_cost.py --throughput "$OUT_DIR/gpu.json" --amp
  } 2>&1 | tee "$OUT_DIR/table_hours.md" || status=1
fi
exit $status
