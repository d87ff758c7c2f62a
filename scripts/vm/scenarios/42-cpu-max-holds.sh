# cpu-max-holds: a spinner on 2 threads (the VM has 2 CPUs) in a service with limits.cpu 500m gets
# 0.5 CPU within ±20%, measured from its cgroup's cpu.stat usage_usec over ~5 s of /proc/uptime.
. /vm/lib.sh

check=cpu-max-holds
cl_server /data/cl-cpu || { fail $check "cloudlet server did not start"; exit 0; }

out=$(apply spin <<'YAML'
apiVersion: cloudlet/v1
kind: Service
metadata: {name: spin}
spec:
  command: ["/bin/workload", "spin", "--threads", "2"]
  resources:
    limits: {cpu: 500m}
YAML
) || { fail $check "ctl apply failed: $out"; exit 0; }
if ! wait_until 60 svc_is spin state running; then
  fail $check "spin is not running within 60 s ($(svc_field /tmp/services.json spin state))"
  exit 0
fi
ctl describe service spin -o json >/tmp/spin.json
cg=$(json_get /tmp/spin.json .usage.cgroup)
if [ ! -r "$cg/cpu.stat" ]; then
  fail $check "no cpu.stat in the cgroup describe names: ${cg:-none}"
  exit 0
fi
log "spin: $cg, cpu.max $(cat "$cg/cpu.max")"

usage() { sed -n 's/^usage_usec //p' "$cg/cpu.stat"; }
sleep 2 # past the start
u0=$(usage)
t0=$(uptime_cs)
sleep 5
u1=$(usage)
t1=$(uptime_cs)
measured=$(awk -v du=$((u1 - u0)) -v dt=$((t1 - t0)) 'BEGIN {
  cpus = du / (dt * 10000)
  printf "%s %.3f CPU (%d usec in %.2f s)", (cpus >= 0.4 && cpus <= 0.6) ? "ok" : "bad", cpus, du, dt / 100
}')
log "spin: $measured; cpu.stat: $(tr '\n' ' ' <"$cg/cpu.stat")"
case $measured in
  ok*) pass $check ;;
  *) fail $check "not 0.5 CPU ±20%: ${measured#bad }" ;;
esac
