#!/usr/bin/env bash
# A real one-node SLURM on this machine, to rehearse `cluster=slurm` sweeps and to run
# `pytest -m slurm` (CI starts it this way too). Needs root on Debian bookworm (slurm 22.05,
# munge, MariaDB 10.11); no systemd needed: the daemons run detached and are tracked through
# our own pid files.
#
#   bash dev/local_slurm.sh [start|stop|restart|status|purge|help]     (default: start)
#
#   start    apt-get install what is missing, write the config, start munged, MariaDB, slurmdbd,
#            slurmctld and slurmd, wait until the node is idle. Idempotent: running daemons are
#            kept (slurm's are restarted if the config changed). First start ~20-60 s, later ~1-5 s.
#   stop     stop only the daemons this script started (a munged it found running stays).
#   restart  stop, then start.
#   status   which of our daemons run, then `sinfo`.
#   purge    stop, delete the state directory and our config files. Packages stay installed.
#
# The node: `hostname -s` on 127.0.0.1, the CPUs `slurmd -C` reports, 95% of the memory, no
# GPUs, partition `debug`. EnforcePartLimits=ALL makes sbatch reject GPUs, an unknown partition
# or too much memory at once, instead of a job pending forever. Accounting (slurmdbd + a private
# MariaDB on a unix socket) makes `sacct` work: submitit polls it, and without it a job that
# dies without a result hangs the sweep. The config goes to /etc/slurm/ (where sinfo, sbatch
# and sacct look); a file there that we did not write is kept as <file>.before-modelguard
# (purge puts it back). Ports 6817-6819 must be free.
#
# Environment: MODELGUARD_SLURM_DIR  state, logs, pid files (default /var/tmp/modelguard-slurm)
#              MODELGUARD_SLURM_WAIT seconds to wait for each daemon and the node (default 120)
# Exit codes: 0 ok; 1 failure (logs in $MODELGUARD_SLURM_DIR/log); 3 not root or not Debian.
set -euo pipefail

STATE="${MODELGUARD_SLURM_DIR:-/var/tmp/modelguard-slurm}"
WAIT="${MODELGUARD_SLURM_WAIT:-120}"
CLUSTER=modelguard
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
TAG="# Written by modelguard's dev/local_slurm.sh on every start; edits are lost."
DB="$STATE/mariadb"          # owned by the mysql user: data/, socket, pid and log
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stop goes backwards

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }   # locale-proof: drop the decimal separator
T0="$(now_us)"
say() { local us=$(( $(now_us) - T0 )); printf '[local_slurm %3d.%ds] %s\n' $((us / 1000000)) $((us / 100000 % 10)) "$*" >&2; }
fail() { say "ERROR: ${*:2}"; exit "$1"; }

# The pid of a daemon we started, if it still runs. The pid must run the expected binary (a
# reused pid is not ours) and not be a zombie: in containers PID 1 may be slow to reap, and a
# zombie passes `kill -0`, but its exe link cannot be read.
our_pid() {
  local pid exe
  pid="$(cat "$STATE/pids/$1.pid" 2>/dev/null)" && exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [[ "${exe% (deleted)}" == "$(readlink -f "/usr/sbin/$1")" ]] && echo "$pid"
}

# launch NAME CMD...: run CMD (which execs /usr/sbin/NAME in the foreground) in its own session,
# so it outlives this script and a Ctrl-C in the terminal; it writes its own pid before exec.
launch() {
  local name="$1"; shift
  if our_pid "$name" >/dev/null; then say "$name already running"; return; fi
  rm -f "$STATE/pids/$name.pid"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/pids/$name.pid" "$@" \
    </dev/null >>"$STATE/log/$name.out" 2>&1 &
  for _ in {1..15}; do sleep 0.2; our_pid "$name" >/dev/null && break; done
  our_pid "$name" >/dev/null || fail 1 "$name died at once; see $STATE/log/$name.out"
  say "started $name (pid $(our_pid "$name"))"
}

halt() {
  local pid
  pid="$(our_pid "$1")" || { rm -f "$STATE/pids/$1.pid"; return 0; }
  say "stopping $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in {1..150}; do our_pid "$1" >/dev/null || break; sleep 0.2; done
  if our_pid "$1" >/dev/null; then say "$1 ignored SIGTERM for 30 s: SIGKILL"; kill -KILL "$pid" || true; fi
  rm -f "$STATE/pids/$1.pid"
}

# wait_for DAEMON CMD...: poll CMD (quietly) until it succeeds. Give up after $WAIT seconds, or
# at once if DAEMON (one we started) has died meanwhile, e.g. on a config error.
wait_for() {
  local d="$1" end=$((SECONDS + WAIT)); shift
  until "$@" >/dev/null 2>&1; do
    [[ ! -e "$STATE/pids/$d.pid" ]] || our_pid "$d" >/dev/null || fail 1 "$d has exited; see $STATE/log/$d.*"
    ((SECONDS < end)) || fail 1 "no answer from $d after ${WAIT}s; logs in $STATE/log"
    sleep 0.25
  done
}

# A slurm daemon we did not start (a system one, another local SLURM) would clash on its port.
claim_port() {
  if ! our_pid "$1" >/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
    fail 1 "port $2 is held by a process this script did not start (another $1? stop it first)"; fi
}

install_packages() {
  local p missing=()
  for p in munge slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]} (apt-get; log in $STATE/log/apt.log)"
  # On machines with systemd the packages also start their system services (munge, mariadb);
  # that is harmless: a working munged is reused and our MariaDB has its own socket.
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    >"$STATE/log/apt.log" 2>&1 || { tail -n 15 "$STATE/log/apt.log" >&2; fail 1 "apt-get failed"; }
}

CHANGED=()
# put_conf TMP TARGET MODE: install TMP as TARGET if it differs; remember that it changed.
put_conf() {
  if [[ -e "$2" ]] && ! grep -qxF "$TAG" "$2"; then   # not ours: keep it aside (once), never lose it
    [[ ! -e "$2.before-modelguard" ]] || fail 1 "$2 is not ours and $2.before-modelguard exists; sort them out by hand"
    mv "$2" "$2.before-modelguard"; say "kept the existing $2 as $2.before-modelguard"
  fi
  if cmp -s "$1" "$2"; then rm -f "$1"; return; fi
  install -D -m "$3" "$1" "$2"; rm -f "$1"; CHANGED+=("$2"); say "wrote $2"
}

write_configs() {
  local hw cpus mem tmp
  # The node line must match what slurmd registers with, or slurmctld drains the node; `slurmd -C`
  # prints it: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ... RealMemory=24105".
  hw="$(slurmd -C | head -n 1)"
  cpus="$(grep -oE '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' <<<"$hw" | paste -sd' ')"
  mem="$(grep -oE 'RealMemory=[0-9]+' <<<"$hw" | cut -d= -f2)"
  [[ -n "$cpus" && -n "$mem" ]] || fail 1 "cannot read the hardware from 'slurmd -C': $hw"
  mem=$((mem * 95 / 100))   # a little headroom: less memory at registration than configured drains the node

  tmp="$(mktemp)"
  cat >"$tmp" <<EOF
$TAG
ClusterName=$CLUSTER
# Everything on loopback; the address is given so that no name lookup is needed.
SlurmctldHost=$NODE(127.0.0.1)
CommunicationParameters=NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime: a requeued job (timeout, preemption) may restart after 10 s, not 120 s.
AuthInfo=cred_expire=10
# All daemons run as root, so root can submit and no slurm-owned directories are needed.
SlurmUser=root
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups (there may be no systemd): follow job processes through /proc, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Cores and memory are scheduled (not enforced), so several 1-CPU jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# Reject at submit time what can never run here (GPUs, too much memory, unknown partition).
EnforcePartLimits=ALL
# Schedule a batch job as soon as it is submitted (by default this may wait up to 3 s).
SchedulerParameters=batch_sched_delay=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
# A node left down by an unclean stop comes back by itself.
ReturnToService=2
KillWait=5
# There is no mail here (this silences "MailProg is invalid").
MailProg=/bin/true
NodeName=$NODE NodeAddr=127.0.0.1 $cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  put_conf "$tmp" "$CONF" 0644

  tmp="$(mktemp)"
  cat >"$tmp" <<EOF
$TAG
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
# Our private MariaDB, as the OS root user over its unix socket (no password, no TCP port);
# the socket path reaches slurmdbd through MYSQL_UNIX_PORT.
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  put_conf "$tmp" "$DBD_CONF" 0600   # slurmdbd refuses a config that others can read
}

munge_ok() { munge -n </dev/null | unmunge; }

start_munge() {
  if ! our_pid munged >/dev/null && munge_ok >/dev/null 2>&1; then say "using the munged already running"; return; fi
  # What the munge service would prepare (the key comes with the package; /run may be fresh).
  [[ -s /etc/munge/munge.key ]] || setpriv --reuid=munge --regid=munge --init-groups mungekey --create
  install -d -o munge -g munge -m 0755 /run/munge
  launch munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
  wait_for munged munge_ok
}

start_mariadb() {
  install -d -o mysql -g mysql -m 0750 "$DB"   # mariadbd drops to mysql: it must own its files
  if [[ ! -d "$DB/data/mysql" ]]; then
    say "creating the accounting database in $DB/data"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" --skip-test-db \
      --auth-root-authentication-method=socket >"$STATE/log/mariadb-install-db.log" 2>&1 \
      || fail 1 "mariadb-install-db failed; see $STATE/log/mariadb-install-db.log"
  fi
  # --no-defaults ignores /etc/mysql; --skip-networking leaves any system MariaDB's port alone.
  launch mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB/data" \
    --socket="$DB/mariadb.sock" --pid-file="$DB/mariadbd.pid" --skip-networking \
    --log-error="$DB/mariadbd.log" --innodb-lock-wait-timeout=900
  wait_for mariadbd mariadb --no-defaults -S "$DB/mariadb.sock" -e 'SELECT 1'
}

wait_idle() {
  local end=$((SECONDS + WAIT)) st resumed=0
  until st="$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1)"; [[ "$st" =~ ^(idle|mixed|allocated|completing)$ ]]; do
    if [[ "$st" =~ ^(down|drain|fail) ]] && ((!resumed)); then   # e.g. left down by a kill: resume once
      say "node is $st; resuming it"; scontrol update nodename="$NODE" state=resume || true; resumed=1
    fi
    if ((SECONDS >= end)); then
      sinfo -N -l >&2 || true; tail -n 15 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
      fail 1 "node $NODE is not idle after ${WAIT}s (state '${st:-unknown}')"
    fi
    sleep 0.25
  done
}

start_all() {
  mkdir -p "$STATE"/{pids,run,log,slurmctld,slurmd}
  touch "$STATE/.modelguard-slurm"   # lets purge check that it deletes our directory
  install_packages
  write_configs
  # A new config needs a restart of the daemons that read it (they start again below).
  if [[ " ${CHANGED[*]-} " == *" $CONF "* ]]; then halt slurmd; halt slurmctld; fi
  if [[ " ${CHANGED[*]-} " == *" $DBD_CONF "* ]]; then halt slurmdbd; fi
  claim_port slurmdbd 6819; claim_port slurmctld 6817; claim_port slurmd 6818   # before starting anything
  start_munge
  start_mariadb
  launch slurmdbd env MYSQL_UNIX_PORT="$DB/mariadb.sock" /usr/sbin/slurmdbd -D
  wait_for slurmdbd sacctmgr -n list cluster
  launch slurmctld /usr/sbin/slurmctld -D
  wait_for slurmctld scontrol ping
  launch slurmd /usr/sbin/slurmd -D -N "$NODE"
  wait_idle
  # slurmctld registers the cluster in slurmdbd by itself; wait for it so the first sacct works.
  wait_for slurmctld bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER"
  say "ready: $(sinfo -h -o 'partition %P, %D node %T, %c CPUs, %m MB')"
}

stop_all() { local i; for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do halt "${DAEMONS[i]}"; done; }

status_all() {
  local d pid
  for d in "${DAEMONS[@]}"; do
    if pid="$(our_pid "$d")"; then echo "$d: running (pid $pid)"; else echo "$d: no process started by this script"; fi
  done
  sinfo 2>/dev/null || echo "sinfo: no controller answers"
}

purge_all() {
  local f; stop_all
  for f in "$CONF" "$DBD_CONF"; do
    if [[ -e "$f" ]] && grep -qxF "$TAG" "$f"; then rm -f "$f"; say "removed $f"; fi
    if [[ -e "$f.before-modelguard" ]]; then mv "$f.before-modelguard" "$f"; say "restored $f"; fi
  done
  if [[ -e "$STATE/.modelguard-slurm" ]]; then rm -rf "$STATE"; say "removed $STATE"; fi
}

cmd="${1:-start}"
if [[ "$cmd" =~ ^(help|-h|--help)$ ]]; then awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; fi
[[ -r /etc/debian_version ]] && command -v apt-get >/dev/null && command -v dpkg-query >/dev/null \
  || fail 3 "needs Debian (bookworm): this machine has no /etc/debian_version or no apt-get"
[[ "$(id -u)" == 0 ]] || fail 3 "needs root (it installs packages and runs the SLURM daemons); try: sudo bash $0 $cmd"
NODE="$(hostname -s)"
grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release || say "warning: tested on Debian bookworm only; trying anyway"
case "$cmd" in
  start) start_all ;;
  stop) stop_all ;;
  restart) stop_all; start_all ;;
  status) status_all ;;
  purge) purge_all ;;
  *) fail 1 "unknown command '$cmd' (start|stop|restart|status|purge|help)" ;;
esac
