#!/usr/bin/env bash
# Installs cloudlet on this host as a systemd service: the binary in /usr/local/bin and a unit
# whose stop or restart stops only cloudlet, never the services (KillMode=process: the services
# live in their shims), and that delegates the unit's cgroup to cloudlet (Delegate=yes) so it can
# give every service a cgroup of its own with limits.
#   scripts/install.sh [--print-unit] [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."

unit() {
  cat <<'UNIT'
[Unit]
Description=cloudlet: runs this node's services (no eviction; services outlive cloudlet)
Documentation=man:cloudlet(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/usr/local/bin/cloudlet server --data-dir /var/lib/cloudlet
# Stopping or restarting cloudlet must never stop a service: only the server process is signalled.
KillMode=process
# cloudlet owns this unit's cgroup subtree (server, shims, services/*, groups/*).
Delegate=yes
Restart=always
RestartSec=1s
# A node agent must not be the first thing the OOM killer picks.
OOMScoreAdjust=-900
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
UNIT
}

if [ "${1:-}" = "--print-unit" ]; then
  unit
  exit 0
fi

bin=${1:-target/static/x86_64-unknown-linux-gnu/release/cloudlet}
[ -x "$bin" ] || { echo "no cloudlet binary at $bin: run 'make build' first" >&2; exit 1; }
install -m 0755 "$bin" /usr/local/bin/cloudlet
install -d -m 0700 /var/lib/cloudlet
unit > /etc/systemd/system/cloudlet.service
systemctl daemon-reload
systemctl enable --now cloudlet.service
echo "cloudlet installed: systemctl status cloudlet; cloudlet ctl get services"
