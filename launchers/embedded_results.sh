#!/usr/bin/env bash
# The embedded grid as one named sweep, then docs/results-embedded.md (tables + plots) from it:
#   defenses none, top1, rounding, reverse_sigmoid, mad, am, mld, and none / mld behind
#   quantize=modelguard_s (ModelGuard-S)  x  attacks naive, top1, bayes, ddae_plus, ddae  x  seeds 0, 1, 2
#   = 9 x 5 x 3 = 135 jobs, about 45 min on 2 idle CPU cores (see launchers/README.md).
# Victims are trained first (stages=[victim], one multirun per seed), then the grid runs as
# 30 multiruns (one per attack x seed x {plain, quantized}) with the basic launcher, LANES at a
# time, longest first, one torch thread each. Then `python -m modelguard.report` and
# scripts/results_doc.py write the document. Resume / regenerate: rerun the same command.
#
#   bash launchers/embedded_results.sh [extra overrides for every main.py call]
#
# Environment (defaults in brackets):
#   NAME [embedded]            sweep name
#   SWEEP_DIR [outputs/sweeps/$NAME]  where the sweep goes (logs and commands in $SWEEP_DIR/.launcher/)
#   DEFENSES [none top1 rounding reverse_sigmoid mad am mld]
#   QDEFENSES [none mld]       defenses run with quantize=modelguard_s ("" for none)
#   ATTACKS [naive top1 bayes ddae_plus ddae]
#   SEEDS [0 1 2]
#   LANES [2]                  multiruns side by side (one CPU core each)
#   RECOVER_NET ["recover.epochs=100 recover.scheduler.step_size=50"]
#                              overrides for the recovery-network attacks (ddae, ddae_plus)
#   DOC [docs/results-embedded.md]   plots go to ${DOC%.md}/
# Rehearsal on a tiny grid (seconds per job; writes elsewhere):
#   NAME=embedded-smoke DEFENSES="none top1" QDEFENSES="" ATTACKS="naive bayes" SEEDS="0 1" \
#     DOC=/tmp/embedded-smoke.md bash launchers/embedded_results.sh experiment=smoke
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
declare -A DEFAULT=([NAME]="embedded" [DEFENSES]="none top1 rounding reverse_sigmoid mad am mld"
  [QDEFENSES]="none mld" [ATTACKS]="naive top1 bayes ddae_plus ddae" [SEEDS]="0 1 2" [LANES]="2"
  [RECOVER_NET]="recover.epochs=100 recover.scheduler.step_size=50" [DOC]="docs/results-embedded.md")
ENV_VARS=(NAME DEFENSES QDEFENSES ATTACKS SEEDS LANES RECOVER_NET DOC)
for v in "${ENV_VARS[@]}"; do [[ -v $v ]] || printf -v "$v" '%s' "${DEFAULT[$v]}"; done
SWEEP=${SWEEP_DIR:-outputs/sweeps/$NAME}
META=$SWEEP/.launcher          # dot dir: never read as a job by the report
LOGS=$META/logs
PY=${PYTHON:-python}
mkdir -p "$LOGS"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# shellcheck source=launchers/lib/sweep_helpers.sh
. launchers/lib/sweep_helpers.sh   # commas, quote, run_logged, throttle (the script runs from the repo root)
regen_command() {  # the command line that reproduces this run: changed environment, then the arguments
  local v out=""
  for v in "${ENV_VARS[@]}"; do [[ ${!v} == "${DEFAULT[$v]}" ]] || out+="$v=$(quote "${!v}") "; done
  [[ -v SWEEP_DIR ]] && out+="SWEEP_DIR=$(quote "$SWEEP_DIR") "
  out+="bash launchers/embedded_results.sh"
  for v in "$@"; do out+=" $(quote "$v")"; done
  echo "$out"
}
# Relative cost of one job of each attack (measured on the embedded default; orders the queue).
cost() { case $1 in ddae_plus) echo 10;; ddae) echo 5;; bayes) echo 3;; *) echo 2;; esac; }

# One task = one multirun: "<cost> <attack> <seed> <plain|quantized>".
tasks=()
for attack in $ATTACKS; do
  for seed in $SEEDS; do
    n_plain=$(wc -w <<< "$DEFENSES"); n_q=$(wc -w <<< "$QDEFENSES")
    (( n_plain )) && tasks+=("$(( $(cost "$attack") * n_plain )) $attack $seed plain")
    (( n_q )) && tasks+=("$(( $(cost "$attack") * n_q )) $attack $seed quantized")
  done
done
mapfile -t tasks < <(printf '%s\n' "${tasks[@]}" | sort -k1,1nr -k3,3n)

# The exact overrides of a task, one per line (so that quoting survives).
task_args() {  # attack seed kind
  local attack=$1 seed=$2 kind=$3
  echo "sweep_name=$NAME"
  echo "hydra.sweep.dir=$SWEEP"
  echo "attack=$attack"
  if [[ $kind == quantized ]]; then
    echo "defense=$(commas $QDEFENSES)"; echo "quantize=modelguard_s"
  else
    echo "defense=$(commas $DEFENSES)"
  fi
  echo "seed=$seed"
  if [[ $attack == ddae || $attack == ddae_plus ]]; then
    local x; for x in $RECOVER_NET; do echo "$x"; done
  fi
  echo "threads=1"; echo "progress=false"
  echo "+hydra.callbacks.report.enabled=false"   # one report at the end, not one per multirun
}

{
  echo "# victims first (one multirun per seed; the victim cache is shared with every other sweep):"
  echo "$PY main.py -m sweep_name=$NAME-victims hydra.sweep.dir=$META/victims stages=[victim] seed=$(commas $SEEDS) threads=1 progress=false $*"
  echo "# the grid: $LANES lane(s), each line one multirun"
  for t in "${tasks[@]}"; do
    read -r _ attack seed kind <<< "$t"
    mapfile -t a < <(task_args "$attack" "$seed" "$kind")
    echo "$PY main.py -m ${a[*]} $*"
  done
} > "$META/commands.txt"

status=0
failures=$META/failures
: > "$failures"

echo "[$(date +%H:%M:%S)] victims for seeds $SEEDS"
for seed in $SEEDS; do
  throttle
  run_logged "victim-seed$seed.log" $PY main.py -m sweep_name="$NAME-victims" hydra.sweep.dir="$META/victims" \
    stages=[victim] seed="$seed" threads=1 progress=false +hydra.callbacks.report.enabled=false "$@" &
done
wait
echo "[$(date +%H:%M:%S)] grid: ${#tasks[@]} multiruns, $LANES at a time (commands: $META/commands.txt)"
for t in "${tasks[@]}"; do
  read -r _ attack seed kind <<< "$t"
  mapfile -t a < <(task_args "$attack" "$seed" "$kind")
  throttle
  run_logged "$attack-seed$seed-$kind.log" $PY main.py -m "${a[@]}" "$@" &
done
wait
[[ -s $failures ]] && status=1

$PY -m modelguard.report "$SWEEP" || status=$?
WALL=$(( $(date +%s) - START ))
$PY scripts/results_doc.py "$SWEEP" --out "$DOC" --wall-seconds "$WALL" --started "$START" \
  --command "$(regen_command "$@")" || status=$?
echo "[$(date +%H:%M:%S)] wall time ${WALL} s; exit $status"
exit $status
