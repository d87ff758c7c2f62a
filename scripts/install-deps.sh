#!/usr/bin/env bash
# Installs what cloudlet needs to build, run its examples and run its tests on Debian 12.
# Idempotent; needs root. Called by scripts/run.sh and scripts/test.sh.
set -euo pipefail

# build-essential: also the C++ compiler that builds libFuzzer (libfuzzer-sys, from crates.io
# like every crate) for scripts/fuzz.sh, which needs nothing else: stable Rust, no cargo-fuzz.
# mariadb-server, etcd-server: the stores cloudlet runs for Cloudpods (and the real-binary test); xz-utils
# unpacks the real Cloudpods binaries; protobuf-compiler: protoc, which etcd-client's build runs; tzdata: Cloudpods services load Asia/Shanghai by default.
need_apt=()
for pkg in build-essential pkg-config python3 procps iproute2 iputils-ping netcat-openbsd ethtool curl ca-certificates openvswitch-switch iptables nftables mariadb-server mariadb-client etcd-server etcd-client protobuf-compiler xz-utils tzdata; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "==> apt-get install ${need_apt[*]}"
  apt-get update -qq
  # Install only: the distribution's own MariaDB (and Open vSwitch) services are not started;
  # cloudlet runs MariaDB as a service of its own, on its own data directory and port.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "==> installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
