# cloudlet-runs: `cloudlet server` starts on the data disk, takes a two-service manifest (the
# second dependsOn the first) and reports both running.
. /vm/lib.sh

check=cloudlet-runs
cl_server /data/cl-runs || { fail $check "cloudlet server did not start"; exit 0; }

cat >/tmp/runs.yaml <<'YAML'
apiVersion: cloudlet/v1
kind: Service
metadata: {name: first}
spec:
  command: ["/bin/workload", "sleep"]
---
apiVersion: cloudlet/v1
kind: Service
metadata: {name: second}
spec:
  command: ["/bin/workload", "sleep"]
  dependsOn: [first]
YAML
if ! out=$(ctl apply -f /tmp/runs.yaml 2>&1); then
  fail $check "ctl apply failed: $out"
  exit 0
fi
log "$out"

both_running() { svc_is first state running && svc_is second state running; }
if wait_until 60 both_running; then
  pass $check
else
  ctl get services
  fail $check "not both running after 60 s: first $(svc_field /tmp/services.json first state), second $(svc_field /tmp/services.json second state)"
fi
