#!/usr/bin/env bash
# Installs what cloudlet needs to build, run its examples and run its tests on Debian 12.
# Idempotent; needs root. Called by scripts/run.sh and scripts/test.sh.
set -euo pipefail

need_apt=()
for pkg in build-essential pkg-config python3 procps iproute2 iputils-ping netcat-openbsd ethtool curl ca-certificates openvswitch-switch iptables nftables; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "==> apt-get install ${need_apt[*]}"
  apt-get update -qq
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
