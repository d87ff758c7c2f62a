#!/usr/bin/env bash
# Runs cloudlet's scenario checks in a throw-away VM with a clean cgroup v2 (every controller):
# a Debian kernel under qemu software emulation (-accel tcg; KVM does not work on these machines),
# an initramfs with busybox, a static `cloudlet`, the static test `workload` and scripts/vm/, and a
# small ext4 data disk. Prints one `PASS <check>` / `FAIL <check>: <why>` line per check and exits
# non-zero if a check listed in scripts/vm/checks.txt is missing or any check FAILs.
# Needs root (apt). `make test-vm` calls exactly this.
#
# Environment: VM_TEST_TIMEOUT (seconds for the whole VM run, default 900), VM_SCENARIO_TIMEOUT
# (seconds per scenario, default 240), VM_TEST_VERBOSE=1 (stream the VM's serial console while it runs), VM_TEST_KEEP=1 (keep the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

VM=scripts/vm
TIMEOUT=${VM_TEST_TIMEOUT:-900}
SCENARIO_TIMEOUT=${VM_SCENARIO_TIMEOUT:-240}
TARGET_DIR=target/static
BIN=$TARGET_DIR/x86_64-unknown-linux-gnu/release
t0=$SECONDS

# --- what the VM needs -------------------------------------------------------------------------
./scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
need_apt=()
for pkg in qemu-system-x86 linux-image-amd64 busybox-static cpio e2fsprogs; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "==> apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- static binaries (scripts/build-static.sh: target/static, the normal build stays valid) ------
echo "==> cargo build (static cloudlet and workload, $TARGET_DIR)"
t_build=$SECONDS
./scripts/build-static.sh -p cloudlet -p cloudlet-tests --bin cloudlet --bin workload
build_s=$((SECONDS - t_build))
for b in cloudlet workload; do
  if readelf -l "$BIN/$b" | grep -q 'Requesting program interpreter'; then
    echo "vm-test: $BIN/$b is not static" >&2
    exit 1
  fi
done

# --- kernel and the modules the VM must load (virtio disk, ext4) --------------------------------
kernel=$(printf '%s\n' /boot/vmlinuz-*-amd64 | sort -V | tail -n 1)
[ -f "$kernel" ] || { echo "vm-test: no /boot/vmlinuz-*-amd64" >&2; exit 1; }
kver=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$kver
[ -r "$moddir/modules.dep" ] || { echo "vm-test: no $moddir/modules.dep" >&2; exit 1; }
# Roots: the virtio PCI transport and disk, ext4 and the crc32c it needs (a softdep of ext4).
# Built-in ones (modules.builtin) need nothing; the others are loaded after their dependencies.
MODULES=(virtio_pci virtio_blk crc32c_generic ext4)

declare -A seen=()
load_order=()
# Appends module $1 (a path relative to $moddir) after its dependencies, once.
add_module() {
  local path=$1 dep
  [ -n "${seen[$path]:-}" ] && return 0
  seen[$path]=1
  local deps=()
  read -r -a deps < <(awk -v m="$path:" '$1 == m { $1 = ""; print }' "$moddir/modules.dep")
  for dep in "${deps[@]}"; do
    add_module "$dep"
  done
  load_order+=("$path")
}
for name in "${MODULES[@]}"; do
  path=$(awk -v n="$name" '{ f = $1; sub(/:$/, "", f); b = f; sub(/.*\//, "", b);
    sub(/\.ko(\.(xz|zst|gz))?$/, "", b); gsub(/-/, "_", b); if (b == n) { print f; exit } }' \
    "$moddir/modules.dep")
  if [ -n "$path" ]; then
    add_module "$path"
  elif ! grep -Eq "/${name//_/[-_]}\.ko(\.(xz|zst|gz))?\$" "$moddir/modules.builtin"; then
    echo "vm-test: module $name is neither in $moddir/modules.dep nor built in" >&2
    exit 1
  fi
done

# --- initramfs ---------------------------------------------------------------------------------
work=$(mktemp -d /tmp/cloudlet-vm.XXXXXX)
qemu_pid= # the pid of `timeout`, which passes a TERM on to qemu (and KILLs it 10 s later)
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -TERM "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  if [ "${VM_TEST_KEEP:-}" = 1 ]; then echo "vm-test: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

root=$work/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,data,etc,vm,lib/modules}
cp /bin/busybox "$root/bin/busybox"
cp "$BIN/cloudlet" "$BIN/workload" "$root/bin/"
install -m 0755 "$VM/init" "$root/init"
cp "$VM/lib.sh" "$VM/checks.txt" "$root/vm/"
cp -r "$VM/scenarios" "$root/vm/"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
: >"$root/lib/modules/load.order"
for path in "${load_order[@]}"; do
  file=$(basename "$path")
  ko=${file%.ko*}.ko
  case $file in
    *.ko) cp "$moddir/$path" "$root/lib/modules/$ko" ;;
    *.ko.xz) xz -dc "$moddir/$path" >"$root/lib/modules/$ko" ;;
    *.ko.zst) zstd -qdc "$moddir/$path" >"$root/lib/modules/$ko" ;;
    *.ko.gz) gzip -dc "$moddir/$path" >"$root/lib/modules/$ko" ;;
  esac
  echo "$ko" >>"$root/lib/modules/load.order"
done
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 >"$work/initramfs.gz")

# The data disk: ext4, fully initialised now so that no lazy init writes while a test measures IO.
truncate -s 256M "$work/data.img"
mkfs.ext4 -q -F -L cloudlet-data -E lazy_itable_init=0,lazy_journal_init=0 "$work/data.img"

# --- boot --------------------------------------------------------------------------------------
# ttyS0 is the console (kernel messages and the scenarios' output), ttyS1 carries only the result
# lines, so a kernel message (an OOM report, say) can never break one.
console=$work/console.log
results=$work/results.log
: >"$console"
: >"$results"
echo "==> booting $kernel under qemu (tcg), timeout ${TIMEOUT}s"
t_vm=$SECONDS
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
  -accel tcg -cpu max -m 1024 -smp 2 -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$console" -serial "file:$results" \
  -kernel "$kernel" -initrd "$work/initramfs.gz" \
  -drive "file=$work/data.img,format=raw,if=virtio" \
  -append "console=ttyS0 panic=-1 quiet SCENARIO_TIMEOUT=$SCENARIO_TIMEOUT" \
  </dev/null >"$work/qemu.out" 2>&1 &
qemu_pid=$!
if [ "${VM_TEST_VERBOSE:-}" = 1 ]; then
  tail -n +1 -f --pid="$qemu_pid" "$console" &
fi
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=
vm_s=$((SECONDS - t_vm))

# --- verdict -----------------------------------------------------------------------------------
mapfile -t lines < <(tr -d '\r' <"$results")
mapfile -t expected < <(sed 's/#.*//; s/[[:space:]]*$//; /^$/d' "$VM/checks.txt")
failed=0
done_seen=0
boot='?'
declare -A passed=()
echo
for line in "${lines[@]}"; do
  case $line in
    "PASS "*) passed[${line#PASS }]=1; echo "$line" ;;
    "FAIL "*) failed=1; echo "$line" ;;
    "SKIP "*) echo "$line" ;;
    "BOOT "*) boot=${line#BOOT } ;;
    DONE) done_seen=1 ;;
  esac
done
for check in "${expected[@]}"; do
  if [ -z "${passed[$check]:-}" ] && ! printf '%s\n' "${lines[@]}" | grep -q "^FAIL $check:"; then
    echo "FAIL $check: no result line (the VM did not run it to the end)"
    failed=1
  fi
done
for check in "${!passed[@]}"; do
  printf '%s\n' "${expected[@]}" | grep -qxF "$check" || echo "note: PASS $check is not listed in $VM/checks.txt"
done
if [ "$done_seen" != 1 ]; then
  if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
    echo "FAIL vm: timed out after ${TIMEOUT}s"
  else
    echo "FAIL vm: the VM stopped before /init finished (qemu exit $qemu_rc)"
  fi
  failed=1
fi

echo
echo "vm-test: kernel $kver; modules: ${load_order[*]##*/}"
echo "vm-test: build ${build_s}s, kernel boot to /init ${boot}s (VM clock), VM run ${vm_s}s, total $((SECONDS - t0))s"
if [ "$failed" != 0 ]; then
  echo "---- qemu output ----"
  cat "$work/qemu.out"
  echo "---- last 60 lines of the serial console ----"
  tail -n 60 "$console" | tr -d '\r'
  echo "vm-test: FAILED"
  # The plain closing line CI reads: checks passed and not passed.
  echo "${#passed[@]} passed, $((${#expected[@]} - ${#passed[@]})) failed"
  exit 1
fi
echo "vm-test: all ${#expected[@]} checks passed"
echo "${#expected[@]} passed, 0 failed"
