#!/usr/bin/env bash
# The whole demo-model pipeline on the GPU machine, as one command: a CPU
# smoke test of every code path on a tiny model first (a bug then costs
# seconds, not the training run), then the real run into $OUT.
#   tools/demo-model/extract_kjv.sh        # here, before: writes out/demo-model/kjv.txt
#   run (carry out/demo-model): tools/demo-model/train.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
out=${OUT:-out/demo-model/run}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 tools/demo-model/train.py --kjv out/demo-model/kjv.txt --out /tmp/demo-tiny --tiny
python3 tools/demo-model/train.py --kjv out/demo-model/kjv.txt --out "$out" "$@" 2>&1 | tee "$out/train.log"
