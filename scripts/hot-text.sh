#!/usr/bin/env bash
# Regenerates cmd/cloudlet/hot-text.order, the functions the cloudlet server runs once it serves,
# and components/shim/hot-text.order, the functions a shim runs in its life: the linker places
# each list together at the start of its program (cmd/cloudlet/build.rs passes them to lld as
# --symbol-ordering-file on release links).
#
# Why: the kernel maps program text by the page (and by whole cached folios, 64 KiB around each
# fault), so the server's resident text is set by how many pages its steady-state code is spread
# over, not by its size. Spread over the whole binary, the 1.4 MiB of functions it runs after
# start-up (applying 30 services, restarting them, idling) kept 6.5 MiB of its program resident
# (`make bench`, Linux 6.18); packed, 3.3 MiB. A shim runs 220 KiB of its 1 MiB of text.
#
# How: builds cloudlet as `make bench` does (its link map comes with it), then
# scripts/hot-text.py runs that server under one-shot breakpoints on every function while it
# applies, restarts and idles, and writes the functions that ran, in address order. Needs root
# (ptrace, cgroups) and python3. Run it after changes to what the server does at steady state:
# the link matches the list's names to the build's symbols whatever hashes they carry
# (scripts/link-ordered.sh), so the list only goes stale as the functions themselves change
# (lld skips names that no longer exist; a stale list only packs less). `make bench` shows
# the result.
#   scripts/hot-text.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "==> scripts/build-static.sh -p cloudlet --bin cloudlet; the workload"
./scripts/build-static.sh -p cloudlet --bin cloudlet
cargo build --release -p cloudlet-tests --bin workload
rel=target/static/x86_64-unknown-linux-gnu/release
map="$(ls -t "$rel"/build/cloudlet-*/out/cloudlet.map | head -n 1)"
shim_map=target/shim/x86_64-unknown-linux-gnu/release/cloudlet-shim.map

echo "==> tracing the server's functions (scripts/hot-text.py)"
python3 scripts/hot-text.py --cloudlet "$PWD/$rel/cloudlet" --map "$map" \
  --workload "$PWD/target/release/workload" --out cmd/cloudlet/hot-text.order.tmp \
  --shim-map "$shim_map" --shim-out components/shim/hot-text.order.tmp
mv cmd/cloudlet/hot-text.order.tmp cmd/cloudlet/hot-text.order
mv components/shim/hot-text.order.tmp components/shim/hot-text.order
echo "==> $(wc -l < cmd/cloudlet/hot-text.order) server and" \
  "$(wc -l < components/shim/hot-text.order) shim functions; rebuild (make build) and" \
  "measure (make bench)"
