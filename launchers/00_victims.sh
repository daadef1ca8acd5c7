#!/usr/bin/env bash
# Train and cache the victims (3 seeds) before the big sweeps, so that no SLURM job holds an
# allocation while it waits on another job's victim training (the cache lock).
# 3 jobs, ~1 GPU-minute each on MNIST/LeNet.  Resume: rerun the same command.
#   bash launchers/00_victims.sh [cluster=slurm|local] [dataset=... arch=...]
set -uo pipefail
cd "$(dirname "$0")/.."
python main.py -m sweep_name=victims stages=[victim] seed=0,1,2 "$@"
