# pids-max-holds: a fork bomb (no --max: only its cgroup's pids.max can stop it) in a service with
# limits.pids 32 stops at the limit, while a healthy service's HTTP readiness probe (every second)
# keeps passing: it stays ready in every sample and has no Unready event. `describe` reports the
# refused forks (usage.pidsMaxHits) and the node monitor a PidsLimit event for the bomb.
. /vm/lib.sh

check=pids-max-holds
cl_server /data/cl-pids || { fail $check "cloudlet server did not start"; exit 0; }

out=$(apply healthy <<'YAML'
apiVersion: cloudlet/v1
kind: Service
metadata: {name: healthy}
spec:
  command: ["/bin/workload", "serve", "--port", "18090", "--path", "/healthz"]
  readiness:
    http: {port: 18090, path: /healthz}
    periodSeconds: 1
    failureThreshold: 1
YAML
) || { fail $check "ctl apply failed: $out"; exit 0; }
if ! wait_until 60 svc_is healthy ready true; then
  fail $check "the healthy service is not ready within 60 s ($(svc_field /tmp/services.json healthy state))"
  exit 0
fi

out=$(apply bomb <<'YAML'
apiVersion: cloudlet/v1
kind: Service
metadata: {name: bomb}
spec:
  command: ["/bin/workload", "forkbomb"]
  restart: {policy: never}
  resources:
    limits: {pids: 32}
YAML
) || { fail $check "ctl apply failed: $out"; exit 0; }
forked() { ctl logs bomb 2>/dev/null | grep -q 'forked [0-9]* children'; }
if ! wait_until 60 forked; then
  fail $check "the fork bomb did not report within 60 s (log: $(ctl logs bomb 2>&1 | tail -n 2 | tr '\n' ';'))"
  exit 0
fi
line=$(ctl logs bomb | grep -o 'forked [0-9]* children.*' | head -n 1)
log "bomb: $line"

# The healthy service, sampled for 5 s while the bomb sits at its limit.
samples=
for _ in 1 2 3 4 5 6; do
  services_json /tmp/services.json
  samples="$samples $(svc_field /tmp/services.json healthy ready)"
  sleep 1
done
log "healthy ready samples:$samples"

ctl describe service bomb -o json >/tmp/bomb.json
hits=$(json_get /tmp/bomb.json .usage.pidsMaxHits)
current=$(json_get /tmp/bomb.json .usage.pidsCurrent)
max=$(json_get /tmp/bomb.json .usage.pidsMax)
log "bomb usage: pidsCurrent $current, pidsMax $max, pidsMaxHits $hits"

if ! wait_until 15 has_event service=bomb reason=PidsLimit; then
  fail $check "no PidsLimit event for bomb within 15 s (events: $(event_count /tmp/events.json service=bomb) for bomb)"
elif [ "$(event_count /tmp/events.json service=healthy reason=Unready)" != 0 ]; then
  fail $check "healthy had an Unready event while the bomb ran"
elif case "$samples" in *false* | *null* | "") true ;; *) false ;; esac; then
  fail $check "healthy was not ready in every sample:$samples"
elif [ "$max" != 32 ] || [ "${current:-99}" -gt 32 ] || [ "${hits:-0}" -le 0 ]; then
  fail $check "not held at 32: pidsMax $max, pidsCurrent $current, pidsMaxHits $hits ($line)"
else
  pass $check
fi
