#!/usr/bin/env bash
# ModelGuard-S (quantizer only, no defense) trade-off across its eps budget against the naive
# and D-DAE+ attacks: quantize.eps 0.25|0.5|1.0 x 2 attacks x 3 seeds = 18 jobs, plus the
# undefended baseline (6 jobs). Resume: rerun the same command.
#   bash launchers/quantize_sweep.sh cluster=slurm
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-quantize_sweep}
status=0
python main.py -m sweep_name="$NAME" defense=none attack=naive,ddae_plus seed=0,1,2 "$@" || status=$?
python main.py -m sweep_name="$NAME" defense=none quantize=modelguard_s quantize.eps=0.25,0.5,1.0 \
  attack=naive,ddae_plus seed=0,1,2 "$@" || status=$?
[[ $status == 0 ]] || python -m modelguard.report "outputs/sweeps/$NAME"
exit $status
