#!/usr/bin/env bash
# Start/stop a real single-node SLURM on this machine, to rehearse `cluster=slurm` sweeps and to
# run `pytest -m slurm`. A thin wrapper: the work (apt-get install of Debian's slurm 22.05 and
# munge, MariaDB + slurmdbd for sacct, a one-node config with partition `debug`, daemons on
# loopback) is done by the lab's local-slurm.sh, which must be present:
#   LOCAL_SLURM_SCRIPT=/path/to/local-slurm.sh   (default: ../shared/slurm/local-slurm.sh)
# Needs root on Debian (bookworm). First start ~75 s (packages), later ~3-30 s.
#
#   bash launchers/local_slurm.sh start|stop|status|restart|purge|help
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
script="${LOCAL_SLURM_SCRIPT:-$repo/../shared/slurm/local-slurm.sh}"
if [[ ! -f "$script" ]]; then
  echo "local_slurm.sh: $script not found; set LOCAL_SLURM_SCRIPT to the lab's local-slurm.sh" >&2
  exit 3
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "local_slurm.sh: needs root (it installs packages and runs the SLURM daemons)" >&2
  exit 3
fi
exec bash "$script" "${1:-start}" "${@:2}"
