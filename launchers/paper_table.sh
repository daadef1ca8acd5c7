#!/usr/bin/env bash
# The paper's main comparison for one victim dataset (experiment-grid.md §3; the original's
# scripts/run_<dataset>.py, its README's "Table 2" experiments): experiment=paper/<dataset> x the
# 8 defenses x KnockoffNets and JBDA-TR x the attacks, with the grid's skip rules:
#   1. the defense-aware attacks (ddae, ddae_plus, bayes) are not run against no defense;
#   2. the top1 attack is run only against Reverse Sigmoid and AM;
#   3. s4l and smoothing are run only with KnockoffNets (JBDA-TR ignores their knobs);
#   4. 2-QPI is not in the scripted grid: QPI2=1 adds it (KnockoffNets, every defense: 8 jobs).
# That is 47 KnockoffNets + 31 JBDA-TR = 78 jobs per seed. ModelGuard-S is defense=none behind
# quantize=modelguard_s. The victims are trained first (stages=[victim]), then one multirun per
# (policy, attack, plain | ModelGuard-S), then `python -m modelguard.report` writes results.csv,
# results.md, tradeoff.png and paper_table.md into the sweep; paper_table.md is the table in the
# paper's shape (experiment-grid.md §5): rows = the 8 defenses with their protected accuracy,
# columns = the (policy, attack) pairs run, '–' where a skip rule left a cell out, substitute
# accuracy then fidelity. Resume: rerun the same command.
#
#   bash launchers/paper_table.sh <cifar10|cifar100|cub200|caltech256> [overrides for every main.py call]
#   DRY_RUN=1 bash launchers/paper_table.sh cifar10     # print the commands and the job counts only
#   bash launchers/paper_table.sh caltech256 device=cuda loader.num_workers=8 cluster=slurm
#
# Environment (defaults in brackets):
#   SEEDS [0]                 seeds of every job (the paper: one run per setting)
#   QPI2 [0]                  1: add the optional 2-QPI attack
#   ATTACKS [naive top1 s4l smoothing ddae ddae_plus bayes]   a part of the grid (a rehearsal)
#   LANES [1]                 multiruns side by side (with cluster=slurm: how many arrays at once)
#   NAME [paper-<dataset>]    sweep name; SWEEP_DIR [outputs/sweeps/$NAME]
#   DRY_RUN [0]               1: print, run nothing, write nothing
#   PYTHON [python]
set -uo pipefail
cd "$(dirname "$0")/.."
DATASETS="cifar10 cifar100 cub200 caltech256"
DATASET=${1:-}
if [[ -z $DATASET || ! " $DATASETS " =~ " $DATASET " ]]; then
  echo "usage: bash launchers/paper_table.sh <dataset> [overrides]; dataset: one of $DATASETS (got '${DATASET}')" >&2
  exit 2
fi
shift
SEEDS=${SEEDS:-0}
QPI2=${QPI2:-0}
LANES=${LANES:-1}
DRY_RUN=${DRY_RUN:-0}
NAME=${NAME:-paper-$DATASET}
SWEEP=${SWEEP_DIR:-outputs/sweeps/$NAME}
META=$SWEEP/.launcher          # dot dir: never read as a job by the report
PY=${PYTHON:-python}
PRESET=experiment=paper/$DATASET

DEFENSES="none reverse_sigmoid mad am top1 rounding mld"   # behind no quantizer; ModelGuard-S apart
GRID_ATTACKS="naive top1 s4l smoothing ddae ddae_plus bayes"
ATTACKS=${ATTACKS:-$GRID_ATTACKS}
(( QPI2 )) && ATTACKS+=" qpi2"
for a in $ATTACKS; do
  if [[ ! " $GRID_ATTACKS qpi2 " =~ " $a " ]]; then
    echo "ATTACKS: '$a' is not an attack of the grid ($GRID_ATTACKS; qpi2 with QPI2=1)" >&2
    exit 2
  fi
done

# shellcheck source=launchers/lib/sweep_helpers.sh
. launchers/lib/sweep_helpers.sh   # commas, quote, run_logged, throttle (the script runs from the repo root)

# The skip rules, as three questions about an attack.
plain_defenses() {  # the defenses (without a quantizer) the attack runs against
  case $1 in
    top1) echo "reverse_sigmoid am" ;;                                  # rule 2
    ddae|ddae_plus|bayes) echo "${DEFENSES/none /}" ;;                  # rule 1
    *) echo "$DEFENSES" ;;
  esac
}
against_modelguard_s() { [[ $1 != top1 ]]; }                            # rule 2
policies() {
  case $1 in
    s4l|smoothing|qpi2) echo knockoff ;;                                # rules 3, 4
    *) echo "knockoff jbtr3" ;;
  esac
}

# One task = one multirun: "<policy> <attack> <plain|modelguard_s>".
tasks=()
declare -A JOBS=([knockoff]=0 [jbtr3]=0)
for attack in $ATTACKS; do
  for policy in $(policies "$attack"); do
    n=$(wc -w <<< "$(plain_defenses "$attack")")
    tasks+=("$policy $attack plain")
    if against_modelguard_s "$attack"; then
      tasks+=("$policy $attack modelguard_s")
      n=$(( n + 1 ))
    fi
    JOBS[$policy]=$(( JOBS[$policy] + n ))
  done
done
n_seeds=$(wc -w <<< "$SEEDS")
total=$(( JOBS[knockoff] + JOBS[jbtr3] ))

task_args() {  # policy attack kind: the overrides of one multirun, one per line (quoting survives)
  echo "sweep_name=$NAME"
  echo "hydra.sweep.dir=$SWEEP"
  echo "$PRESET"
  echo "policy=$1"
  echo "attack=$2"
  if [[ $3 == modelguard_s ]]; then
    echo "defense=none"; echo "quantize=modelguard_s"
  else
    echo "defense=$(commas $(plain_defenses "$2"))"
  fi
  echo "seed=$(commas $SEEDS)"
  echo "progress=false"
  echo "+hydra.callbacks.report.enabled=false"   # one report at the end, not one per multirun
}
victim_args() {
  echo "sweep_name=$NAME-victims"; echo "hydra.sweep.dir=$META/victims"; echo "$PRESET"
  echo "stages=[victim]"; echo "seed=$(commas $SEEDS)"; echo "progress=false"
  echo "+hydra.callbacks.report.enabled=false"
}
printable() {  # the command line of: main.py -m <args...>
  local out="$PY main.py -m" a
  for a in "$@"; do out+=" $(quote "$a")"; done
  echo "$out"
}

listing() {
  echo "# paper grid: $DATASET ($PRESET), seeds $SEEDS, sweep $SWEEP"
  mapfile -t a < <(victim_args)
  echo "# victims first (victim, outlier exposure, misinformation model; cached, shared by every job):"
  printable "${a[@]}" "$@"
  for t in "${tasks[@]}"; do
    read -r policy attack kind <<< "$t"
    if [[ $kind == modelguard_s ]]; then defs="modelguard_s (defense=none quantize=modelguard_s)"; n=1
    else defs=$(plain_defenses "$attack"); n=$(wc -w <<< "$defs"); fi
    echo "# $policy $attack: $(( n * n_seeds )) job(s): $defs"
    mapfile -t a < <(task_args "$policy" "$attack" "$kind")
    printable "${a[@]}" "$@"
  done
  echo "# jobs: knockoff ${JOBS[knockoff]}, jbtr3 ${JOBS[jbtr3]}, total $total per seed; $(( total * n_seeds )) with $n_seeds seed(s) in ${#tasks[@]} multiruns"
  echo "# then: $PY -m modelguard.report $SWEEP   (results.csv, results.md, tradeoff.png, paper_table.md)"
}

if (( DRY_RUN )); then
  listing "$@"
  exit 0
fi

START=$SECONDS
LOGS=$META/logs
mkdir -p "$LOGS"
listing "$@" > "$META/commands.txt"
failures=$META/failures
: > "$failures"

echo "[$(date +%H:%M:%S)] $DATASET: victims for seeds $SEEDS, then $(( total * n_seeds )) jobs in ${#tasks[@]} multiruns (commands: $META/commands.txt)"
mapfile -t a < <(victim_args)
run_logged victims.log "$PY" main.py -m "${a[@]}" "$@"
if [[ -s $failures ]]; then
  echo "the victims failed (see $LOGS/victims.log): nothing else is run" >&2
  exit 1
fi
for t in "${tasks[@]}"; do
  read -r policy attack kind <<< "$t"
  mapfile -t a < <(task_args "$policy" "$attack" "$kind")
  throttle
  run_logged "$policy-$attack-$kind.log" "$PY" main.py -m "${a[@]}" "$@" &
done
wait
status=0
[[ -s $failures ]] && status=1
$PY -m modelguard.report "$SWEEP" || status=$?
echo "[$(date +%H:%M:%S)] $DATASET: wall time $(( SECONDS - START )) s; exit $status; report: $SWEEP/paper_table.md (the paper's table), $SWEEP/results.md"
exit $status
