# vm-boots: the VM has a clean cgroup v2 with the controllers cloudlet's limits need.
# data-disk: the ext4 data disk is mounted read-write on /data (the data dir and io.max live there).
. /vm/lib.sh

if ! grep -q '^none /sys/fs/cgroup cgroup2 ' /proc/mounts; then
  fail vm-boots "cgroup2 is not mounted on /sys/fs/cgroup"
else
  controllers=$(cat /sys/fs/cgroup/cgroup.controllers)
  log "cgroup.controllers: $controllers"
  missing=
  for c in cpu memory pids io; do
    case " $controllers " in
      *" $c "*) ;;
      *) missing="$missing $c" ;;
    esac
  done
  if [ -n "$missing" ]; then
    fail vm-boots "cgroup.controllers lacks$missing (has: $controllers)"
  else
    pass vm-boots
  fi
fi

if ! grep -q '^/dev/vda /data ext4 rw' /proc/mounts; then
  fail data-disk "/dev/vda is not mounted rw on /data: $(grep ' /data ' /proc/mounts)"
elif ! echo ok >/data/.probe || [ "$(cat /data/.probe)" != ok ]; then
  fail data-disk "cannot write /data"
else
  rm -f /data/.probe
  log "$(df -h /data | tail -n 1)"
  pass data-disk
fi
