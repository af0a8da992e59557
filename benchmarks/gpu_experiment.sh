#!/usr/bin/env bash
# Train an experiment file's seeds at once on a lent GPU machine (one process per seed, sharing the GPU), within a
# deadline, and bring back its ledger: builds the 10k Audio CLEVRGAN set first (the runs need the data on that
# machine; it is deterministic, and the manifest's digest is printed to compare with a local build).
#
#   benchmarks/gpu_experiment.sh OUT EXPERIMENT_FILE DEADLINE_S SEED [SEED ...]
#   PHASES='A|B;C' benchmarks/gpu_experiment.sh ...   # methods A and B (and their chains) first, then C
#
# Needs negmine's dependencies importable (on the lent machine: wheels carried in .whl/, installed by this script
# when .whl/ exists). Writes OUT/env.txt, OUT/data.log, OUT/seed-S.log, OUT/ledger.tar.gz (the experiment's ledger,
# examples/audio_clevrgan/results/NAME-runs) and OUT/runs.tar.gz (metrics and reports, no checkpoints). Runs are
# resumable: what the deadline cuts off is simply not in the ledger.
set -u
out=${1:?usage: benchmarks/gpu_experiment.sh OUT EXPERIMENT_FILE DEADLINE_S SEED [SEED ...]}
exp=${2:?experiment file}
deadline=$(( $(date +%s) + ${3:?deadline in seconds} ))
shift 3
seeds=("$@")
name=$(basename "$exp" .toml)
ledger=examples/audio_clevrgan/results/$name-runs
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$out/install.log" 2>&1 \
    || { cat "$out/install.log"; exit 1; }
fi
{ python3 -c "import torch, platform; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'python', platform.python_version())"
  nproc; git rev-parse HEAD 2>/dev/null; } > "$out/env.txt" 2>&1
t0=$(date +%s)
negmine data build audio-clevrgan --out data/audio-clevrgan --n 10000 --seed 0 --workers 14 > "$out/data.log" 2>&1 \
  || { tail -20 "$out/data.log"; exit 1; }
echo "data build in $(( $(date +%s) - t0 )) s; manifest $(sha256sum data/audio-clevrgan/manifest.jsonl | cut -c1-16)" \
  | tee -a "$out/data.log"
IFS=';' read -r -a phases <<< "${PHASES:-}"
[ ${#phases[@]} -eq 0 ] && phases=("")
for s in "${seeds[@]}"; do
  ( for phase in "${phases[@]}"; do
      args=()
      IFS='|' read -r -a methods <<< "$phase"
      for m in "${methods[@]}"; do args+=(--method "$m"); done
      left=$(( deadline - $(date +%s) ))
      [ "$left" -gt 30 ] || break
      OMP_NUM_THREADS=3 timeout "$left" negmine experiment "$exp" --out "runs/$name" --ledger "$ledger" --seed "$s" \
        "${args[@]}"
      echo "phase '$phase' rc=$? at $(( $(date +%s) - t0 )) s"
    done > "$out/seed-$s.log" 2>&1 ) &
done
wait
tar czf "$out/ledger.tar.gz" "$ledger" 2>/dev/null
tar czf "$out/runs.tar.gz" --exclude='*.pt' --exclude='*.png' "runs/$name" 2>/dev/null
for s in "${seeds[@]}"; do echo "== seed $s"; grep -E "phase|Error|error" "$out/seed-$s.log" | tail -5; done
ls "$ledger"/* 2>/dev/null | head -40
