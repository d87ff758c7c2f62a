# Helpers for the VM's /init and scenarios (busybox sh; sourced, never run). A scenario reports
# each of its checks exactly once with `pass NAME` or `fail NAME WHY` (`verdict` does either and
# ends the scenario; `skip NAME WHY` for a check that cannot run yet); the host fails the run on
# any FAIL and on any check of checks.txt that has no line. Scenarios leave their processes and
# cgroups behind: /init removes them. Helpers keep their own variables `_`-prefixed.

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
  _name=$1
  shift
  result "FAIL $_name: $*"
}

# verdict NAME [WHY...]: `pass NAME` without WHY, `fail NAME WHY...` with it; then ends the
# scenario (exit 0), so that a scenario reports its check exactly once.
verdict() {
  if [ $# -eq 1 ]; then pass "$1"; else fail "$@"; fi
  exit 0
}

# skip NAME WHY...
skip() {
  _name=$1
  shift
  result "SKIP $_name: $*"
}

# Console-only progress line.
log() { echo "   $*"; }

# Seconds since boot, whole.
uptime_s() { cut -d . -f 1 /proc/uptime; }

# wait_until SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds (returns 0) or
# SECONDS have passed (returns 1, after one last try).
wait_until() {
  _deadline=$(($(uptime_s) + $1))
  shift
  while [ "$(uptime_s)" -lt "$_deadline" ]; do
    "$@" && return 0
    sleep 0.2
  done
  "$@"
}

# cl_server DIR [ARGS...]: starts `cloudlet server --data-dir DIR ARGS...` in the background (its
# output appended to DIR.server.log) and waits up to 30 s until its API answers (a socket file
# alone may be a stale one of a server that was killed). Sets CL_DIR and CL_PID; `ctl` then talks
# to it.
cl_server() {
  CL_DIR=$1
  shift
  export CLOUDLET_DATA_DIR=$CL_DIR
  mkdir -p "$CL_DIR"
  cloudlet server --data-dir "$CL_DIR" "$@" >>"$CL_DIR.server.log" 2>&1 &
  CL_PID=$! # for scenarios that signal the server
  export CL_PID
  if ! wait_until 30 ctl get services >/dev/null 2>&1; then
    log "cloudlet server did not answer on $CL_DIR/cloudlet.sock in 30 s; its log:"
    tail -n 20 "$CL_DIR.server.log"
    return 1
  fi
}

# ctl ARGS...: `cloudlet ctl` against the server of cl_server.
ctl() { cloudlet ctl --data-dir "$CL_DIR" "$@"; }

# apply NAME: `ctl apply -f` of the manifest on stdin (kept in /tmp/NAME.yaml); prints ctl's
# output, returns its status.
apply() {
  cat >"/tmp/$1.yaml"
  ctl apply -f "/tmp/$1.yaml" 2>&1
}

# --- JSON (busybox has no jq) ------------------------------------------------------------------
# JSON_AWK: awk functions; jparse(TEXT) fills J[PATH] = VALUE for every scalar of one JSON text
# (and `{}` / `[]` for empty ones). PATH is `.key` for an object member and `[i]` for an array
# element, from the top: `[0].lastExit.reason`, `.usage.pidsMaxHits`. Strings are unquoted with
# their escapes left as they are; null, true, false and numbers are their text.
JSON_AWK='
function jws() { while (jp <= jn && index(" \t\r\n", substr(js, jp, 1))) jp++ }
function jstr(   out, c) {
  jp++
  out = ""
  while (jp <= jn) {
    c = substr(js, jp, 1)
    if (c == "\"") { jp++; return out }
    if (c == "\\") { out = out substr(js, jp, 2); jp += 2; continue }
    out = out c
    jp++
  }
  return out
}
function jval(path,   c, i, k, start) {
  jws()
  c = substr(js, jp, 1)
  if (c == "{" || c == "[") {
    jp++
    jws()
    if (substr(js, jp, 1) == (c == "{" ? "}" : "]")) { jp++; J[path] = (c == "{" ? "{}" : "[]"); return }
    for (i = 0; jp <= jn; i++) {
      if (c == "{") { jws(); k = jstr(); jws(); jp++; jval(path "." k) }
      else jval(path "[" i "]")
      jws()
      k = substr(js, jp, 1)
      jp++
      if (k != ",") return
    }
    return
  }
  if (c == "\"") { J[path] = jstr(); return }
  start = jp
  while (jp <= jn && !index(",]} \t\r\n", substr(js, jp, 1))) jp++
  J[path] = substr(js, start, jp - start)
}
function jparse(text,   k) { for (k in J) delete J[k]; js = text; jn = length(text); jp = 1; jval("") }
'

# json_flat FILE: prints `PATH=VALUE` for every value of the JSON text in FILE, sorted.
json_flat() {
  awk "$JSON_AWK"'{ t = t $0 "\n" } END { jparse(t); for (k in J) print k "=" J[k] }' "$1" | sort
}

# json_get FILE PATH: prints the value at PATH (`.usage.pidsMaxHits`) of the JSON text in FILE;
# returns 1 if there is none.
json_get() {
  awk -v p="$2" "$JSON_AWK"'{ t = t $0 "\n" }
    END { jparse(t); if (!(p in J)) exit 1; print J[p] }' "$1"
}

# json_find FILE ARRAY KEY VALUE FIELD: in the array at path ARRAY (`` for the top), finds the
# first element whose `.KEY` is VALUE (every element before it must have a KEY too) and prints
# its FIELD (a path: `.state`, `.lastExit.code`); returns 1 if there is no such element or field.
json_find() {
  awk -v a="$2" -v key="$3" -v want="$4" -v f="$5" "$JSON_AWK"'{ t = t $0 "\n" }
    END {
      jparse(t)
      for (i = 0; (a "[" i "]." key) in J; i++) {
        if (J[a "[" i "]." key] != want) continue
        if (!((a "[" i "]" f) in J)) exit 1
        print J[a "[" i "]" f]
        exit 0
      }
      exit 1
    }' "$1"
}

# services_json FILE: writes `ctl get services -o json` to FILE.
services_json() { ctl get services -o json >"$1"; }

# svc_field FILE SERVICE FIELD: prints FIELD of SERVICE from `ctl get services -o json` in FILE
# (strings unquoted, `null` as is). FIELD is a key (`state`, `ready`, `pid`) or a path below one
# (`lastExit.code`). Returns 1 if not found.
svc_field() { json_find "$1" "" name "$2" ".$3"; }

# svc_is SERVICE FIELD VALUE: true when the server reports VALUE for SERVICE's FIELD now.
svc_is() {
  services_json /tmp/services.json 2>/dev/null || return 1
  [ "$(svc_field /tmp/services.json "$1" "$2")" = "$3" ]
}

# events_json FILE: writes `ctl events -o json` (one JSON object a line) to FILE.
events_json() { ctl events -o json >"$1"; }

# event_count FILE PATH=VALUE...: prints how many events of FILE (as events_json writes it) have
# every PATH (`service`, `reason`, `exit.reason`) equal to its VALUE.
event_count() {
  _file=$1
  shift
  awk -v conds="$*" "$JSON_AWK"'
    BEGIN { nc = split(conds, c, " ") }
    {
      jparse($0)
      ok = 1
      for (i = 1; i <= nc; i++) {
        eq = index(c[i], "=")
        if (J["." substr(c[i], 1, eq - 1)] != substr(c[i], eq + 1)) ok = 0
      }
      n += ok
    }
    END { print n + 0 }' "$_file"
}

# has_event PATH=VALUE...: true when the server has an event matching (see event_count).
has_event() {
  events_json /tmp/events.json 2>/dev/null || return 1
  [ "$(event_count /tmp/events.json "$@")" -gt 0 ]
}

# --- processes and cgroups ---------------------------------------------------------------------
# alive PID: true when PID exists and is not a zombie.
alive() {
  [ -n "$1" ] && [ "$1" != null ] || return 1
  _stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  case ${_stat##*") "} in Z*) return 1 ;; esac
}

# in_cgroup DIR PID: true when PID is listed in DIR/cgroup.procs.
in_cgroup() { grep -qx "$2" "$1/cgroup.procs" 2>/dev/null; }

# uptime_cs: time since boot in hundredths of a second (/proc/uptime has two decimals).
uptime_cs() { cut -d ' ' -f 1 /proc/uptime | tr -d .; }

# zombies: prints `PID PPID COMM` of every zombie process, one a line.
zombies() {
  for _statfile in /proc/[0-9]*/stat; do
    _stat=$(cat "$_statfile" 2>/dev/null) || continue
    _comm=${_stat#*(}
    _comm=${_comm%)*}
    # shellcheck disable=SC2086 # split the fields after the command name
    set -- ${_stat##*") "}
    _pid=${_statfile#/proc/}
    [ "$1" = Z ] && echo "${_pid%/stat} $2 $_comm"
  done
}
