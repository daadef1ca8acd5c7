# Shell helpers shared by the grid launchers (embedded_results.sh, paper_table.sh); sourced, not run.
# run_logged and throttle read the caller's LOGS, failures and LANES.

commas() { local IFS=,; echo "$*"; }
# one argument, shell-quoted only when it needs to be (for the printed commands)
quote() { if [[ $1 =~ ^[][A-Za-z0-9_./=,:+@%-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi; }

run_logged() {  # log_name cmd...: run cmd with its output in $LOGS/log_name; a failure is listed in $failures
  local log=$LOGS/$1; shift
  local t0=$SECONDS
  if "$@" > "$log" 2>&1; then
    echo "[$(date +%H:%M:%S)] done   $(basename "$log" .log) ($(( SECONDS - t0 )) s)"
  else
    echo "[$(date +%H:%M:%S)] FAILED $(basename "$log" .log) ($(( SECONDS - t0 )) s): see $log"
    echo "$log" >> "$failures"
  fi
}
# wait until fewer than LANES background jobs run
throttle() { while (( $(jobs -rp | wc -l) >= LANES )); do wait -n; done; }
