# io-max-holds: a writer on the data disk (/dev/vda) in a service with limits.io wbps 4Mi writes
# 4 MiB/s within ±25%, measured from its cgroup's io.stat wbytes over ~5 s of /proc/uptime. It
# writes with O_DIRECT (busybox dd oflag=direct): buffered writes reach the disk only at
# writeback, so what a writer does is not what io.max throttles at that moment.
. /vm/lib.sh

check=io-max-holds
cl_server /data/cl-io || { fail $check "cloudlet server did not start"; exit 0; }
devno=$(cat /sys/block/vda/dev)

out=$(apply writer <<'YAML'
apiVersion: cloudlet/v1
kind: Service
metadata: {name: writer}
spec:
  command:
    - /bin/sh
    - -c
    - mkdir -p /data/io && while :; do dd if=/dev/zero of=/data/io/f bs=1M count=32 oflag=direct conv=notrunc 2>/dev/null; done
  resources:
    limits:
      io: [{device: /dev/vda, wbps: 4Mi}]
YAML
) || { fail $check "ctl apply failed: $out"; exit 0; }
if ! wait_until 60 svc_is writer state running; then
  fail $check "writer is not running within 60 s ($(svc_field /tmp/services.json writer state))"
  exit 0
fi
ctl describe service writer -o json >/tmp/writer.json
cg=$(json_get /tmp/writer.json .usage.cgroup)
if [ ! -r "$cg/io.stat" ]; then
  fail $check "no io.stat in the cgroup describe names: ${cg:-none}"
  exit 0
fi
log "writer: $cg, io.max $(cat "$cg/io.max")"

wbytes() { awk -v d="$devno" '$1 == d { for (i = 2; i <= NF; i++) if ($i ~ /^wbytes=/) print substr($i, 8) }' "$cg/io.stat"; }
sleep 2 # past the start (and any first burst)
b0=$(wbytes)
t0=$(uptime_cs)
sleep 5
b1=$(wbytes)
t1=$(uptime_cs)
measured=$(awk -v db=$((${b1:-0} - ${b0:-0})) -v dt=$((t1 - t0)) 'BEGIN {
  rate = db / (dt / 100) / 1048576
  printf "%s %.2f MiB/s (%d bytes in %.2f s)", (rate >= 3 && rate <= 5) ? "ok" : "bad", rate, db, dt / 100
}')
log "writer: $measured; io.stat: $(cat "$cg/io.stat")"
gone() { services_json /tmp/services.json && ! svc_field /tmp/services.json writer state >/dev/null; }
ctl delete service writer >/dev/null 2>&1 && wait_until 30 gone && rm -rf /data/io
case $measured in
  ok*) pass $check ;;
  *) fail $check "not 4 MiB/s ±25%: ${measured#bad }" ;;
esac
