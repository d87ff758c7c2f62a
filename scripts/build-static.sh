#!/usr/bin/env bash
# Builds release binaries fully static and position-dependent (glibc linked in, no PIE) into
# target/static/x86_64-unknown-linux-gnu/release. This is cloudlet's release form: one file that
# runs on any x86_64 Linux (the VM test boots it with nothing else), and the smallest in memory:
# no dynamic loader or load-time relocations in the server and in each of its shims
# (`make bench`: 10.3 MiB for a server and 30 shims, against 12.7 MiB dynamically linked).
# The linker is cc through scripts/link-ordered.sh, which matches the hot-text lists to this
# build's symbols whatever hashes their names carry now (see there).
#   scripts/build-static.sh [cargo build args]      e.g. -p cloudlet --bin cloudlet
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C linker=$PWD/scripts/link-ordered.sh" \
  cargo build --release --target x86_64-unknown-linux-gnu --target-dir target/static "$@"
