#!/usr/bin/env bash
# GPU smoke check of the paper profile: builds a small Audio CLEVRGAN set, runs paper-gpu-smoke.toml (the six methods
# of paper.toml at 400 steps, one seed) on the GPU while the test suite runs on the CPU cores beside it, and writes
# each method's step rate to OUT/speed.md. Needs negmine installed with the speech extra and a CUDA device.
#
#   benchmarks/gpu_smoke.sh OUT [PAIRS] [WORKERS] [SECONDS]
#
# SECONDS bounds the experiment (it is resumable: run again to continue); results and logs land in OUT.
set -u
out=${1:?usage: benchmarks/gpu_smoke.sh OUT [PAIRS] [WORKERS] [SECONDS]}
pairs=${2:-4000}
workers=${3:-14}
seconds=${4:-300}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ python3 -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'python', platform.python_version())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc; git rev-parse HEAD; } > "$out/env.txt" 2>&1
t0=$(date +%s)
negmine data build audio-clevrgan --out data/audio-clevrgan-smoke --n "$pairs" --seed 0 --workers "$workers" \
    > "$out/data.log" 2>&1
echo "data build rc=$? in $(( $(date +%s) - t0 )) s" >> "$out/data.log"
# the test suite under this machine's torch, on CPU cores the experiment leaves free
( timeout "$seconds" python3 -m pytest -q -p no:cacheprovider -n 6 tests > "$out/tests.log" 2>&1
  echo "rc=$?" >> "$out/tests.log" ) &
tests=$!
nvidia-smi dmon -s um -d 5 > "$out/dmon.txt" 2>&1 &
dmon=$!
t0=$(date +%s)
timeout "$seconds" negmine experiment examples/audio_clevrgan/experiments/paper-gpu-smoke.toml \
    --out runs/paper-gpu-smoke > "$out/experiment.log" 2>&1
echo "experiment rc=$? in $(( $(date +%s) - t0 )) s" >> "$out/experiment.log"
kill "$dmon" 2>/dev/null
wait "$tests"
python3 - "$out/speed.md" <<'PY'
import json, statistics, sys
from pathlib import Path
rows = ["| run | steps logged | median steps/s | s/step |", "| --- | ---: | ---: | ---: |"]
for metrics in sorted(Path("runs/paper-gpu-smoke").glob("*/seed-*/metrics.jsonl")):
    rates = [r["steps_per_s"] for r in map(json.loads, metrics.read_text().splitlines()) if "steps_per_s" in r]
    if rates:
        m = statistics.median(rates[1:] or rates)  # the first window holds the warm-up
        rows.append(f"| {metrics.parent.parent.name}/{metrics.parent.name} | {len(rates)} | {m:.2f} | {1 / m:.3f} |")
Path(sys.argv[1]).write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
tar czf "$out/runs.tar.gz" --exclude='*.pt' runs/paper-gpu-smoke 2>/dev/null
tail -n 3 "$out/tests.log"
