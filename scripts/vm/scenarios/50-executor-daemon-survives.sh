# executor-daemon-survives: a service (caller) with `executor: true` starts a transient service
# (vm-1, group vms) through its executor socket, then is restarted and deleted: vm-1 keeps its pid
# throughout, is listed with owner caller and group vms, and lives in the cgroup groups/vms/vm-1.
. /vm/lib.sh

check=executor-daemon-survives
cl_server /data/cl-exec || { fail $check "cloudlet server did not start"; exit 0; }
group=/sys/fs/cgroup/cloudlet/groups/vms/vm-1

out=$(apply caller <<'YAML'
apiVersion: cloudlet/v1
kind: Service
metadata: {name: caller}
spec:
  executor: true
  command:
    - /bin/sh
    - -c
    - /bin/cloudlet ctl --socket "$CLOUDLET_EXECUTOR" run --name vm-1 --group vms --memory 64Mi -- /bin/workload sleep; exec /bin/workload sleep
YAML
) || { fail $check "ctl apply failed: $out"; exit 0; }

if ! wait_until 60 svc_is vm-1 state running; then
  fail $check "vm-1 is not running within 60 s (caller: $(svc_field /tmp/services.json caller state); caller's log: $(ctl logs caller 2>&1 | tail -n 3 | tr '\n' ';'))"
  exit 0
fi
pid=$(svc_field /tmp/services.json vm-1 pid)
cpid=$(svc_field /tmp/services.json caller pid)
owner=$(svc_field /tmp/services.json vm-1 owner)
grp=$(svc_field /tmp/services.json vm-1 group)
log "vm-1: pid $pid, owner $owner, group $grp; caller: pid $cpid; caller's log: $(ctl logs caller 2>&1 | tail -n 2 | tr '\n' ';')"

# Every step checks the same facts: vm-1 running with its first pid, in its cgroup.
problem=
same() {
  services_json /tmp/services.json
  now=$(svc_field /tmp/services.json vm-1 pid)
  state=$(svc_field /tmp/services.json vm-1 state)
  if [ "$now" != "$pid" ] || [ "$state" != running ] || ! alive "$pid"; then
    problem="after $1: vm-1 state $state, pid $pid -> $now"
  elif ! in_cgroup "$group" "$pid"; then
    problem="after $1: pid $pid not in $group/cgroup.procs ($(cat "$group/cgroup.procs" 2>&1 | tr '\n' ' '))"
  fi
  [ -z "$problem" ]
}

c_restarted() { svc_is caller state running && [ "$(svc_field /tmp/services.json caller pid)" != "$cpid" ]; }
c_gone() { services_json /tmp/services.json && ! svc_field /tmp/services.json caller state >/dev/null; }

[ "$owner" = caller ] && [ "$grp" = vms ] ||
  verdict $check "vm-1 is listed with owner $owner, group $grp (want caller, vms)"
same start || verdict $check "$problem"

out=$(ctl restart caller 2>&1) || verdict $check "ctl restart caller failed: $out"
wait_until 30 c_restarted ||
  verdict $check "caller did not run again within 30 s after ctl restart ($(svc_field /tmp/services.json caller state), pid $(svc_field /tmp/services.json caller pid))"
sleep 1
same "ctl restart caller" || verdict $check "$problem"
log "caller's second run: $(ctl logs caller 2>&1 | grep -v '^workload' | tr '\n' ';')"

out=$(ctl delete service caller 2>&1) || verdict $check "ctl delete service caller failed: $out"
wait_until 30 c_gone ||
  verdict $check "caller is still listed 30 s after ctl delete ($(svc_field /tmp/services.json caller state))"
sleep 1
same "ctl delete service caller" || verdict $check "$problem"
log "vm-1 after restart and delete of caller: pid $pid, owner $(svc_field /tmp/services.json vm-1 owner), group $(svc_field /tmp/services.json vm-1 group)"
verdict $check
