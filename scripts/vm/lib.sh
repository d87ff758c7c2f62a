# Helpers for the VM's /init and scenarios (busybox sh; sourced, never run). A scenario reports
# each of its checks exactly once with `pass NAME` or `fail NAME WHY` (`skip NAME WHY` for one
# that cannot run yet); the host fails the run on any FAIL and on any check of checks.txt that
# has no line. Scenarios leave their processes and cgroups behind: /init removes them.

# The host reads result lines from the second serial port only: kernel messages on the console
# (ttyS0) can never break them.
RESULT_TTY=/dev/ttyS1

# Prints a result line on the console and on $RESULT_TTY.
result() {
  echo "$*"
  echo "$*" >"$RESULT_TTY"
}

pass() { result "PASS $1"; }

# fail NAME WHY...
fail() {
  name=$1
  shift
  result "FAIL $name: $*"
}

# skip NAME WHY...
skip() {
  name=$1
  shift
  result "SKIP $name: $*"
}

# Console-only progress line.
log() { echo "   $*"; }

# Seconds since boot, whole.
uptime_s() { cut -d . -f 1 /proc/uptime; }

# wait_until SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds (returns 0) or
# SECONDS have passed (returns 1, after one last try).
wait_until() {
  deadline=$(($(uptime_s) + $1))
  shift
  while [ "$(uptime_s)" -lt "$deadline" ]; do
    "$@" && return 0
    sleep 0.2
  done
  "$@"
}

# cl_server DIR: starts `cloudlet server` on DIR in the background (its output in DIR.server.log)
# and waits up to 30 s for its API socket. Sets CL_DIR and CL_PID; `ctl` then talks to it.
cl_server() {
  CL_DIR=$1
  export CLOUDLET_DATA_DIR=$CL_DIR
  mkdir -p "$CL_DIR"
  cloudlet server --data-dir "$CL_DIR" >"$CL_DIR.server.log" 2>&1 &
  CL_PID=$! # for scenarios that signal the server
  export CL_PID
  if ! wait_until 30 test -S "$CL_DIR/cloudlet.sock"; then
    log "cloudlet server did not open $CL_DIR/cloudlet.sock in 30 s; its log:"
    tail -n 20 "$CL_DIR.server.log"
    return 1
  fi
}

# ctl ARGS...: `cloudlet ctl` against the server of cl_server.
ctl() { cloudlet ctl --data-dir "$CL_DIR" "$@"; }

# services_json FILE: writes `ctl get services -o json` to FILE.
services_json() { ctl get services -o json >"$1"; }

# svc_field FILE SERVICE FIELD: prints FIELD of SERVICE from the pretty JSON of
# `ctl get services -o json` in FILE (strings unquoted, `null` as is). FIELD is a top-level key
# (`state`, `ready`, `pid`) or one level deeper (`lastExit.code`). Returns 1 if not found.
svc_field() {
  awk -v svc="$2" -v key="$3" '
    function val(line) { sub(/^[^:]*: /, "", line); sub(/,$/, "", line); gsub(/"/, "", line); return line }
    /^    "[^"]+": / {
      k = $1; gsub(/[":]/, "", k); top = k
      if (k == "name") cur = val($0)
      if (cur == svc && k == key) { print val($0); found = 1; exit }
      next
    }
    /^      "[^"]+": / {
      k = $1; gsub(/[":]/, "", k)
      if (cur == svc && top "." k == key) { print val($0); found = 1; exit }
    }
    END { exit !found }' "$1"
}

# svc_is SERVICE FIELD VALUE: true when the server reports VALUE for SERVICE's FIELD now.
svc_is() {
  services_json /tmp/services.json 2>/dev/null || return 1
  [ "$(svc_field /tmp/services.json "$1" "$2")" = "$3" ]
}

# zombies: prints `PID PPID COMM` of every zombie process, one a line.
zombies() {
  for stat in /proc/[0-9]*/stat; do
    line=$(cat "$stat" 2>/dev/null) || continue
    comm=${line#*(}
    comm=${comm%)*}
    # shellcheck disable=SC2086 # split the fields after the command name
    set -- ${line##*") "}
    pid=${stat#/proc/}
    [ "$1" = Z ] && echo "${pid%/stat} $2 $comm"
  done
}
