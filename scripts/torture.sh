#!/usr/bin/env bash
# `make torture`: cloudlet under abuse, counted (tests/src/bin/torture.rs). Builds the binaries,
# then: the server SIGKILLed TORTURE_KILLS times (default 100) mid-apply and mid-restart;
# TORTURE_REQUESTS (default 10000) malformed or hostile API requests over TLS and the socket
# while real agents heartbeat; TORTURE_IDLE (default 2000) idle anonymous TLS connections held
# TORTURE_HOLD (default 45s). Prints one table; fails if a must-be-zero count is not zero.
# Needs root (network namespaces). scripts/test.sh runs a short pass of it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

cargo build --workspace --bins
exec target/debug/torture \
  --kills "${TORTURE_KILLS:-100}" \
  --requests "${TORTURE_REQUESTS:-10000}" \
  --idle "${TORTURE_IDLE:-2000}" \
  --hold "${TORTURE_HOLD:-45s}" "$@"
