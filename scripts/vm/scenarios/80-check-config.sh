# check-config: on this kernel with a clean cgroup v2, `cloudlet check-config` says OK for cgroup2,
# its controllers and cgroup.kill, and exits 0 (on the CI host, hybrid mode, the same checks WARN:
# tests/tests/manifests.rs and components/host/tests cover that side).
. /vm/lib.sh

out=$(cloudlet check-config --data-dir /data/cc 2>&1)
rc=$?
log "$out"
[ "$rc" -eq 0 ] || verdict check-config "exit code $rc: $out"
for check in cgroup2 cgroup-controllers cgroup-kill subreaper data-dir; do
  line=$(echo "$out" | grep -E "^[A-Z]+ +$check ")
  case "$line" in
    OK*) ;;
    *) verdict check-config "$check is not OK: ${line:-missing}" ;;
  esac
done
verdict check-config
