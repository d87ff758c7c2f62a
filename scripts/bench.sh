#!/usr/bin/env bash
# `make bench`: compares cloudlet with supervisord and runit in one run, as ratios. Installs the
# peers if missing (runit with apt, supervisor with pip), builds cloudlet and the bench binary in
# release mode (static, as cloudlet ships), then runs the `bench` binary, which starts 30 services under each supervisor in
# turn (all under temp dirs of its own), measures restart latency after SIGKILL and the
# supervisor's own memory (PSS), prints a table and cleans up every process it started. Twice more
# for cloudlet and runit: with 300 services, and with the machine busy (a spinning thread per CPU
# in a cgroup of its own), where cloudlet's restart should be no slower than runit's.
# Then it runs `clusterbench`: one cloudlet server with 300 simulated agents (real joins, mutual
# TLS) heartbeating every 2 s, and reports the server's CPU and memory against the cluster targets
# (under 25% of one core, under 150 MB) and k3s' documented footprint.
# Last `netbench` (needs root; installs openvswitch-switch if missing): in a network namespace of
# its own, an ovsdb-server and an ovs-vswitchd (netdev datapath), OVSDB transact and
# monitor-notification latency of cloudlet's client against ovsdb-client and ovs-vsctl, and a
# 1,000-rule firewall applied, re-applied and re-applied with one rule changed against
# ovs-ofctl replace-flows of the whole flow set; ratios, no timing asserts.
# BENCH_KILLS sets the number of SIGKILLs per supervisor (default 60, round-robin over the 30);
# CLUSTERBENCH_AGENTS and CLUSTERBENCH_MEASURE the agents (default 300) and the measured time
# (default 60s). NETBENCH_CALLS, NETBENCH_RULES: netbench's transactions per side (default 500)
# and firewall rules (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

apt_updated=
apt_install() {
  echo "==> apt-get install $*"
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v runsvdir >/dev/null 2>&1 || apt_install runit
command -v ovs-vswitchd >/dev/null 2>&1 || apt_install openvswitch-switch iproute2

if ! command -v supervisord >/dev/null 2>&1; then
  command -v pip >/dev/null 2>&1 || apt_install python3-pip
  echo "==> pip install supervisor"
  pip install -q supervisor || pip install -q --break-system-packages supervisor
  hash -r
fi

# The real supervisord script, not a version-manager shim (pyenv's shims exec through bash
# scripts): the bench measures the process it starts, and its start-up should not include pyenv's.
supervisord_bin="$(command -v supervisord)"
if command -v pyenv >/dev/null 2>&1 && real="$(pyenv which supervisord 2>/dev/null)"; then
  supervisord_bin="$real"
fi
runsvdir_bin="$(command -v runsvdir)"

echo "==> scripts/build-static.sh -p cloudlet -p cloudlet-tests --bins (cloudlet's release form)"
./scripts/build-static.sh -p cloudlet -p cloudlet-tests --bins
rel=target/static/x86_64-unknown-linux-gnu/release
# The server's and the shims' steady-state functions are linked together (hot-text.order, see
# scripts/hot-text.sh); the link matches the list's names whatever their hashes
# (scripts/link-ordered.sh), and a function the list names that this build no longer has is
# not packed.
for pair in "cmd/cloudlet/hot-text.order:$(ls -t "$rel"/build/cloudlet-*/out/cloudlet.map | head -n 1)" \
  "components/shim/hot-text.order:target/shim/x86_64-unknown-linux-gnu/release/cloudlet-shim.map"; do
  order="${pair%%:*}" map="${pair#*:}"
  missing="$(scripts/link-ordered.sh --missing "$order" "$map")"
  echo "==> $order: $missing of $(wc -l < "$order") functions are not in this build" \
    "(scripts/hot-text.sh regenerates the list when the bench's memory lines slip)"
done
# The service itself stays dynamically linked, like the services the peers run: a static service
# would stop sharing libc's pages with runsv and supervisord and inflate their PSS.
echo "==> cargo build --release -p cloudlet-tests --bin workload (the service, dynamic)"
cargo build --release -p cloudlet-tests --bin workload

echo "==> versions"
echo "supervisord $("$supervisord_bin" --version) ($supervisord_bin)"
echo "runit $(dpkg-query -W -f='${Version}' runit 2>/dev/null || echo unknown) ($runsvdir_bin)"

echo "==> bench: cloudlet, supervisord and runit"
"$rel/bench" \
  --cloudlet "$PWD/$rel/cloudlet" \
  --workload "$PWD/target/release/workload" \
  --supervisord "$supervisord_bin" \
  --runsvdir "$runsvdir_bin" \
  --kills "${BENCH_KILLS:-60}"

echo
echo "==> bench: 300 services, cloudlet and runit (restart target: runit's)"
"$rel/bench" \
  --cloudlet "$PWD/$rel/cloudlet" \
  --workload "$PWD/target/release/workload" \
  --runsvdir "$runsvdir_bin" \
  --services 300 --kills "${BENCH_KILLS:-60}" --restart-target 1 \
  --only cloudlet --only runit

echo
echo "==> bench: the machine busy (a CPU hog in another cgroup), cloudlet and runit"
"$rel/bench" \
  --cloudlet "$PWD/$rel/cloudlet" \
  --workload "$PWD/target/release/workload" \
  --runsvdir "$runsvdir_bin" \
  --busy --kills "${BENCH_KILLS:-60}" --restart-target 1 \
  --only cloudlet --only runit

echo
echo "==> clusterbench: one server, ${CLUSTERBENCH_AGENTS:-300} simulated agents"
"$rel/clusterbench" \
  --cloudlet "$PWD/$rel/cloudlet" \
  --agents "${CLUSTERBENCH_AGENTS:-300}" \
  --measure "${CLUSTERBENCH_MEASURE:-60s}"

echo
echo "==> netbench: OVSDB and the firewall against the Open vSwitch tools"
exec "$rel/netbench" \
  --calls "${NETBENCH_CALLS:-500}" \
  --changes "${NETBENCH_CALLS:-500}" \
  --rules "${NETBENCH_RULES:-1000}"
