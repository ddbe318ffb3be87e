#!/usr/bin/env bash
# The rerun's GPU part (docs/results.md): one pool at a larger budget on a CUDA GPU, resumable
# from its ledgers (benchmarks/results/mixture_rerun-bBUDGET/), which are copied to $OUT (when
# set) after every run, complete or stopped.
#
#   bash benchmarks/rerun_gpu.sh                 # arith12 at 32,000 tokens, 540 s at most
#   POOL=noise BUDGET=16000 LIMIT=300 bash benchmarks/rerun_gpu.sh
#   DEVICE=cpu LIMIT=60 bash benchmarks/rerun_gpu.sh   # the same steps on a CPU
set -uo pipefail
cd "$(dirname "$0")/.."
POOL=${POOL:-arith12} BUDGET=${BUDGET:-32000} LIMIT=${LIMIT:-540} DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout --signal=INT "$LIMIT" "$PYTHON" benchmarks/mixture_rerun.py --pools "$POOL" \
  --budget "$BUDGET" --set "base.device=$DEVICE"
rc=$?
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT" && cp -r "benchmarks/results/mixture_rerun-b$BUDGET" docs/results-b"$BUDGET".* "$OUT"/ 2>/dev/null
fi
echo "rerun_gpu: exit $rc (124: stopped at the ${LIMIT} s limit; run it again to continue)"
exit $rc
