# disk-pressure-no-eviction: a watched filesystem (an 8 MiB tmpfs, --disk-path) filled past 85%
# raises DiskPressure (warning), past 95% critical: `get nodes` shows it, a DiskPressure event is
# written, and nothing is stopped: both services keep their pids with 0 restarts. Freeing the
# space clears the condition.
. /vm/lib.sh

check=disk-pressure-no-eviction
fill=/tmp/fill
mkdir -p $fill
if ! mount -t tmpfs -o size=8m tmpfs $fill; then
  fail $check "cannot mount an 8 MiB tmpfs on $fill"
  exit 0
fi
cl_server /data/cl-disk --disk-path $fill --monitor-interval 500ms ||
  { fail $check "cloudlet server did not start"; umount $fill; exit 0; }

# The scenario's verdict; the tmpfs is unmounted whatever it is.
finish() {
  rm -f $fill/*
  umount $fill
  verdict $check "$@"
}

out=$(apply disk <<'YAML'
apiVersion: cloudlet/v1
kind: Service
metadata: {name: one}
spec:
  command: ["/bin/workload", "sleep"]
---
apiVersion: cloudlet/v1
kind: Service
metadata: {name: two}
spec:
  command: ["/bin/workload", "--print", "0", "--interval", "200ms", "sleep"]
  resources:
    limits: {memory: 64Mi}
YAML
) || finish "ctl apply failed: $out"

both_running() { svc_is one state running && svc_is two state running; }
wait_until 60 both_running || finish "not both running within 60 s"
pids="$(svc_field /tmp/services.json one pid) $(svc_field /tmp/services.json two pid)"
log "services one and two: pids $pids"

nodes_json() { ctl get nodes -o json >/tmp/nodes.json; }
disk() { json_find /tmp/nodes.json "[0].conditions" type DiskPressure ".$1"; }
# disk_is STATUS SEVERITY: the node's DiskPressure condition now.
disk_is() { nodes_json && [ "$(disk status)" = "$1" ] && [ "$(disk severity)" = "$2" ]; }
free_pct() { df $fill | awk 'NR == 2 { printf "%.1f%% free", 100 - $5 }'; }

disk_is false null || finish "DiskPressure before filling: $(disk status) $(disk severity): $(disk reason)"

# 7 MiB of 8: 12.5% free, below 15% (warning).
dd if=/dev/zero of=$fill/a bs=64k count=112 2>/dev/null
log "filled to $(free_pct)"
wait_until 15 disk_is true warning ||
  finish "no DiskPressure warning at $(free_pct): $(disk status) $(disk severity): $(disk reason)"
log "warning: $(disk reason)"

# 7.75 MiB of 8: 3.1% free, below 5% (critical).
dd if=/dev/zero of=$fill/b bs=64k count=12 2>/dev/null
log "filled to $(free_pct)"
wait_until 15 disk_is true critical ||
  finish "no critical DiskPressure at $(free_pct): $(disk status) $(disk severity): $(disk reason)"
log "critical: $(disk reason)"
has_event reason=DiskPressure || finish "no DiskPressure event"
log "DiskPressure events: $(grep '"reason":"DiskPressure"' /tmp/events.json | sed 's/.*"message":"\([^"]*\)".*/\1/' | tr '\n' ';')"

# Some monitor rounds under critical pressure: nothing is stopped.
sleep 3
services_json /tmp/services.json
now="$(svc_field /tmp/services.json one pid) $(svc_field /tmp/services.json two pid)"
for s in one two; do
  state=$(svc_field /tmp/services.json $s state)
  restarts=$(svc_field /tmp/services.json $s restarts)
  [ "$state" = running ] && [ "$restarts" = 0 ] || finish "$s under DiskPressure: state $state, restarts $restarts"
done
[ "$now" = "$pids" ] || finish "pids changed under DiskPressure: $pids -> $now"
for pid in $pids; do alive "$pid" || finish "pid $pid is gone under DiskPressure"; done

rm -f $fill/a $fill/b
log "freed: $(free_pct)"
wait_until 15 disk_is false null || finish "DiskPressure did not clear at $(free_pct): $(disk status) $(disk severity): $(disk reason)"
finish
