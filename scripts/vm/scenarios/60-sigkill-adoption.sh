# sigkill-adoption: `kill -9` of cloudlet server leaves its three services (each with limits)
# running with the same pids in their cgroups; a new server on the same data dir adopts them:
# the same pids and restart counts, and one Adopted event per service.
. /vm/lib.sh

check=sigkill-adoption
services="alpha beta gamma"
cl_server /data/cl-adopt || { fail $check "cloudlet server did not start"; exit 0; }

out=$(apply adopt <<'YAML'
apiVersion: cloudlet/v1
kind: Service
metadata: {name: alpha}
spec:
  command: ["/bin/workload", "sleep"]
  resources:
    limits: {memory: 64Mi}
---
apiVersion: cloudlet/v1
kind: Service
metadata: {name: beta}
spec:
  command: ["/bin/workload", "serve", "--port", "18091"]
  readiness:
    http: {port: 18091, path: /}
  resources:
    limits: {cpu: 200m, pids: 16}
---
apiVersion: cloudlet/v1
kind: Service
metadata: {name: gamma}
spec:
  command: ["/bin/workload", "--print", "0", "--interval", "100ms", "sleep"]
  resources:
    limits: {memory: 32Mi, pids: 8}
YAML
) || { fail $check "ctl apply failed: $out"; exit 0; }

all_ready() {
  services_json /tmp/services.json || return 1
  for s in $services; do
    [ "$(svc_field /tmp/services.json $s ready)" = true ] || return 1
  done
}
if ! wait_until 60 all_ready; then
  fail $check "not all ready within 60 s: $(for s in $services; do printf '%s ' "$s=$(svc_field /tmp/services.json $s state)"; done)"
  exit 0
fi
before=
for s in $services; do
  before="$before $s:$(svc_field /tmp/services.json $s pid):$(svc_field /tmp/services.json $s restarts)"
done
log "before:$before"

kill -KILL "$CL_PID"
wait "$CL_PID" 2>/dev/null
if alive "$CL_PID"; then
  fail $check "the server $CL_PID outlived kill -9"
  exit 0
fi
sleep 1

# With no server: every service runs, in its cgroup.
problem=
for entry in $before; do
  s=${entry%%:*}
  pid=${entry#*:}
  pid=${pid%:*}
  cg=/sys/fs/cgroup/cloudlet/services/$s
  if ! alive "$pid"; then
    problem="$problem $s (pid $pid) is gone;"
  elif ! in_cgroup "$cg" "$pid"; then
    problem="$problem $s (pid $pid) is not in $cg ($(cat "$cg/cgroup.procs" 2>&1 | tr '\n' ' '));"
  fi
done
if [ -n "$problem" ]; then
  fail $check "after kill -9 of the server:$problem"
  exit 0
fi
log "after kill -9: every service runs in its cgroup"

cl_server /data/cl-adopt || { fail $check "the second cloudlet server did not start"; exit 0; }
if ! wait_until 30 all_ready; then
  fail $check "not all ready within 30 s of the second server: $(for s in $services; do printf '%s ' "$s=$(svc_field /tmp/services.json $s state)"; done)"
  exit 0
fi
adopted() { has_event service="$1" reason=Adopted; }
for entry in $before; do
  s=${entry%%:*}
  now="$s:$(svc_field /tmp/services.json $s pid):$(svc_field /tmp/services.json $s restarts)"
  [ "$now" = "$entry" ] || problem="$problem $s (pid:restarts) $entry -> $now;"
  wait_until 10 adopted "$s" || problem="$problem no Adopted event for $s;"
done
if [ -n "$problem" ]; then
  fail $check "after adoption:$problem"
else
  log "adopted: $(event_count /tmp/events.json reason=Adopted) Adopted events"
  pass $check
fi
