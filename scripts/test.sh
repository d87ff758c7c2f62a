#!/usr/bin/env bash
# Runs every test of cloudlet: installs what the tests need, builds once, then runs the workspace's
# unit, integration and end-to-end tests. .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "==> cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins
echo "==> cargo test"
cargo test --workspace --no-fail-fast
