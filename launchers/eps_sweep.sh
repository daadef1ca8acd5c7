#!/usr/bin/env bash
# ModelGuard-W utility/extraction trade-off (paper: accuracy vs. substitute accuracy across eps):
# defense=mld eps 0.25|0.5|1.0 x attack naive|ddae_plus x 3 seeds = 18 jobs, plus the undefended
# baseline (2 attacks x 3 seeds = 6 jobs) in the same sweep. ~24 GPU-jobs of a few minutes each.
# Resume: rerun the same command (finished jobs are skipped).
#   bash launchers/eps_sweep.sh cluster=slurm            (add experiment=smoke cluster=local to rehearse)
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-eps_sweep}
status=0
python main.py -m sweep_name="$NAME" defense=none attack=naive,ddae_plus seed=0,1,2 "$@" || status=$?
python main.py -m sweep_name="$NAME" defense=mld defense.eps=0.25,0.5,1.0 attack=naive,ddae_plus seed=0,1,2 "$@" || status=$?
[[ $status == 0 ]] || python -m modelguard.report "outputs/sweeps/$NAME"
exit $status
