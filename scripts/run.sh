#!/usr/bin/env bash
# The newcomer's first command: install what is needed, build cloudlet, start a single-node server
# on its embedded defaults, apply the example stack and show it starting in dependency order.
# The server then runs in the foreground; Ctrl-C stops cloudlet, never the services (run this script
# again and the new server adopts them).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "==> scripts/build-static.sh (cloudlet, one static binary)"
./scripts/build-static.sh -p cloudlet --bin cloudlet
bin="$PWD/target/static/x86_64-unknown-linux-gnu/release/cloudlet"
data_dir="${CLOUDLET_DATA_DIR:-/var/lib/cloudlet}"
export CLOUDLET_DATA_DIR="$data_dir"

echo "==> cloudlet server --data-dir $data_dir"
"$bin" server --data-dir "$data_dir" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' INT TERM
for _ in $(seq 100); do
  "$bin" ctl get services >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { echo "the server exited; see its messages above" >&2; exit 1; }
  sleep 0.1
done

echo "==> cloudlet ctl apply -f examples/"
"$bin" ctl apply -f examples/

echo "==> waiting for the stack (db -> api -> web) to be ready"
for _ in $(seq 300); do
  if "$bin" ctl get services -o json | python3 -c \
    'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s and all(x["ready"] for x in s) else 1)'; then
    break
  fi
  sleep 0.2
done
"$bin" ctl events | grep -E 'Started|Ready' || true
echo
"$bin" ctl get services
echo
echo "cloudlet is serving on $data_dir/cloudlet.sock. Try: $bin ctl logs web -f"
echo "Ctrl-C stops cloudlet; the services keep running and the next server adopts them."
wait "$server"
