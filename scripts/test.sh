#!/usr/bin/env bash
# Runs every test of cloudlet: installs what the tests need, builds once, then runs the workspace's
# unit, integration and end-to-end tests, a short pass of the fuzz targets (20 s each) and of the
# torture (make torture runs both longer), then the cgroup v2 checks in a qemu VM. .ci/run calls
# exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "==> cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins
echo "==> cargo test"
cargo test --workspace --no-fail-fast
echo "==> fuzz: a short pass of every target (make fuzz runs them longer)"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" ./scripts/fuzz.sh
echo "==> torture: a short pass (make torture runs the full one)"
TORTURE_KILLS=20 TORTURE_REQUESTS=600 TORTURE_IDLE=500 TORTURE_HOLD=15s ./scripts/torture.sh
echo "==> make test-vm (cgroup v2 limits on a real kernel, in qemu)"
./scripts/vm-test.sh
