#!/usr/bin/env bash
# Provision one VM: install overlaynet from the synced folder and run its agent under systemd.
# Usage (as root, by Vagrant): provision.sh HOSTNAME UNDERLAY_IP
set -euo pipefail
host="$1"
addr="$2"
cd /opt/overlaynet
bash tools/setup.sh
ln -sf /opt/overlaynet/.venv/bin/overlaynet /usr/local/bin/overlaynet

# The CLI on this VM talks to this VM's agent (no lab).
cat > /etc/profile.d/overlaynet.sh <<ENV
export OVERLAYNET_LAB=none
export OVERLAYNET_HOST=$host
ENV

cat > /etc/systemd/system/overlaynet-agent.service <<UNIT
[Unit]
Description=overlaynet agent ($host)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/opt/overlaynet/.venv/bin/overlaynet-agent --host $host --advertise-addr $addr
Restart=on-failure
# Containers outlive the agent, as with dockerd's live-restore: only the agent is stopped.
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now overlaynet-agent.service
echo "overlaynet agent running on $host ($addr)"
