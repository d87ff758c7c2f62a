# oom-kills-only-the-hog: a memory hog in a service with limits.memory 64Mi is OOM-killed by its
# cgroup's memory.max: lastExit.reason OOMKilled, an Exited event saying so, and a restart after a
# BackOff (policy always); its neighbour keeps running with the same pid throughout.
. /vm/lib.sh

check=oom-kills-only-the-hog
cl_server /data/cl-oom || { fail $check "cloudlet server did not start"; exit 0; }

out=$(apply oom <<'YAML'
apiVersion: cloudlet/v1
kind: Service
metadata: {name: neighbour}
spec:
  command: ["/bin/workload", "sleep"]
---
apiVersion: cloudlet/v1
kind: Service
metadata: {name: hog}
spec:
  command: ["/bin/workload", "hog", "--step", "10Mi", "--every", "10ms"]
  restart: {policy: always, backoff: {initial: 200ms, max: 2s}}
  resources:
    limits: {memory: 64Mi}
YAML
) || { fail $check "ctl apply failed: $out"; exit 0; }

if ! wait_until 60 svc_is neighbour state running; then
  fail $check "the neighbour is not running within 60 s ($(svc_field /tmp/services.json neighbour state))"
  exit 0
fi
npid=$(svc_field /tmp/services.json neighbour pid)

oomkilled_and_restarted() {
  svc_is hog lastExit.reason OOMKilled && [ "$(svc_field /tmp/services.json hog restarts)" -ge 1 ]
}
if ! wait_until 60 oomkilled_and_restarted; then
  fail $check "hog not OOMKilled and restarted within 60 s: lastExit.reason $(svc_field /tmp/services.json hog lastExit.reason), restarts $(svc_field /tmp/services.json hog restarts)"
  exit 0
fi
restarts=$(svc_field /tmp/services.json hog restarts)
log "hog: restarts $restarts, lastExit $(svc_field /tmp/services.json hog lastExit.reason) signal $(svc_field /tmp/services.json hog lastExit.signal)"

events_json /tmp/events.json
exited=$(event_count /tmp/events.json service=hog reason=Exited exit.reason=OOMKilled)
backoff=$(event_count /tmp/events.json service=hog reason=BackOff)
log "hog events: $exited Exited (OOMKilled), $backoff BackOff; neighbour events: $(event_count /tmp/events.json service=neighbour)"

services_json /tmp/services.json
nstate=$(svc_field /tmp/services.json neighbour state)
nnow=$(svc_field /tmp/services.json neighbour pid)
nrestarts=$(svc_field /tmp/services.json neighbour restarts)
if [ "$exited" -lt 1 ]; then
  fail $check "no Exited event for hog with exit.reason OOMKilled ($(grep '"service":"hog"' /tmp/events.json | grep Exited | head -n 1))"
elif [ "$backoff" -lt 1 ]; then
  fail $check "no BackOff event for hog after $restarts restarts"
elif [ "$nstate" != running ] || [ "$nnow" != "$npid" ] || [ "$nrestarts" != 0 ] || ! alive "$npid"; then
  fail $check "the neighbour was hit: state $nstate, pid $npid -> $nnow, restarts $nrestarts"
else
  pass $check
fi
