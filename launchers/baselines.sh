#!/usr/bin/env bash
# Baseline defenses at their paper settings against every attack (paper's main comparison table):
# 7 defenses x 7 attacks x 3 seeds = 147 jobs (D-DAE trains shadow models: the costliest).
# Resume: rerun the same command.
#   bash launchers/baselines.sh cluster=slurm
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-baselines}
python main.py -m sweep_name="$NAME" \
  defense=none,reverse_sigmoid,am,mad,top1,topk,rounding \
  attack=naive,top1,s4l,smoothing,qpi2,ddae,ddae_plus seed=0,1,2 "$@" \
  || { status=$?; python -m modelguard.report "outputs/sweeps/$NAME"; exit "$status"; }
