# orphans-reaped: a service that orphans 100 grandchildren and exits leaves no zombie: its shim
# (a child subreaper) reaps them. Counts every zombie in the VM 2 s after the service exited.
. /vm/lib.sh

check=orphans-reaped
cl_server /data/cl-orphans || { fail $check "cloudlet server did not start"; exit 0; }

cat >/tmp/orphans.yaml <<'YAML'
apiVersion: cloudlet/v1
kind: Service
metadata: {name: orphans}
spec:
  command: ["/bin/workload", "orphans", "100", "--linger", "500ms", "--then-exit", "0"]
  restart: {policy: never}
YAML
if ! out=$(ctl apply -f /tmp/orphans.yaml 2>&1); then
  fail $check "ctl apply failed: $out"
  exit 0
fi

# Exited and not restarted (policy never): stopped after exit 0 (failed after any other).
exited() { svc_is orphans state stopped || svc_is orphans state failed; }
if ! wait_until 60 exited; then
  ctl get services
  fail $check "the service did not exit within 60 s (state $(svc_field /tmp/services.json orphans state))"
  exit 0
fi
code=$(svc_field /tmp/services.json orphans lastExit.code)
if [ "$code" != 0 ]; then
  fail $check "the service exited with code $code, not 0 (log: $(ctl logs orphans 2>&1 | tail -n 2 | tr '\n' ';'))"
  exit 0
fi
orphaned=$(ctl logs orphans 2>&1 | grep -o 'orphaned [0-9]* pids' | head -n 1)
if [ "$orphaned" != "orphaned 100 pids" ]; then
  fail $check "the service did not report 100 orphans (log: $(ctl logs orphans 2>&1 | tail -n 3))"
  exit 0
fi
sleep 2
z=$(zombies)
if [ -n "$z" ]; then
  fail $check "$(echo "$z" | wc -l) zombies 2 s after exit (pid ppid comm): $(echo "$z" | head -n 5 | tr '\n' ';')"
else
  pass $check
fi
