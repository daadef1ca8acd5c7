#!/usr/bin/env bash
# Smoke sweep: 4 jobs (defense none|top1 x attack naive|top1), synthetic data, jobs as parallel
# local processes (cluster=local), then the report. ~1 min on 2 cores. Proves that launchers,
# job dirs and the report work before anything goes to SLURM.
#   bash launchers/smoke.sh [extra overrides]      -> outputs/sweeps/smoke/{results.csv,results.md,tradeoff.png}
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-smoke}
python main.py -m sweep_name="$NAME" cluster=local experiment=smoke threads=1 \
  defense=none,top1 attack=naive,top1 "$@" \
  || { status=$?; python -m modelguard.report "outputs/sweeps/$NAME"; exit "$status"; }
