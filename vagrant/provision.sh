#!/usr/bin/env bash
# Provision one host for overlaynet: the README's own set-up (tools/setup.sh), the `overlaynet`
# command on PATH for this host's agent, time sync, and the agent itself.
#
# Usage (as root; Vagrant runs it on each VM): provision.sh HOSTNAME UNDERLAY_IP
#
# Environment (every path is parametrised, so the test suite can run this inside a lab host
# namespace and write only under a temporary folder):
#   OVERLAYNET_PROVISION_MODE  systemd (default): the agent runs as overlaynet-agent.service and
#                              chrony keeps the clock; nosystemd: the agent is started in the
#                              background (pid in $ROOT/run/overlaynet-agent.pid, output in
#                              $ROOT/var/log/overlaynet-agent.out) and time sync is left to the
#                              machine: nothing is installed or enabled for it
#   OVERLAYNET_PROVISION_ROOT  prefix for every file this script writes (default: none, i.e. /):
#                              etc/profile.d, etc/systemd/system, etc/chrony/conf.d, usr/local/bin
#   OVERLAYNET_SRC             the project folder (default /opt/overlaynet, Vagrant's synced folder)
#   OVERLAYNET_TIME_SERVER     the host every other host also takes time from (node1's address);
#                              the host with that address serves time to the private network
#   OVERLAYNET_RUN_DIR, OVERLAYNET_STATE_DIR   the agent's socket and state folders (paths.py);
#                              passed on to the agent and the unit when set
#
# Running it again is safe: set-up installs only what is missing, the files are rewritten, the
# agent is restarted (containers outlive it, as with dockerd's live-restore).
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: provision.sh HOSTNAME UNDERLAY_IP" >&2
  exit 2
fi
host="$1"
addr="$2"
mode="${OVERLAYNET_PROVISION_MODE:-systemd}"
root="${OVERLAYNET_PROVISION_ROOT:-}"
src="${OVERLAYNET_SRC:-/opt/overlaynet}"
time_server="${OVERLAYNET_TIME_SERVER:-}"
# An agent restores its state before it answers; a small VM can take a while.
ready_seconds=60

case "$mode" in
  systemd | nosystemd) ;;
  *)
    echo "provision: OVERLAYNET_PROVISION_MODE must be systemd or nosystemd, not '$mode'" >&2
    exit 2
    ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "provision: needs root (the agent builds namespaces and bridges)" >&2
  exit 1
fi
if [ ! -f "$src/tools/setup.sh" ]; then
  echo "provision: no overlaynet project at $src (set OVERLAYNET_SRC)" >&2
  exit 1
fi

say() { echo "provision[$host]: $*"; }

# 1. The README's own set-up: Debian packages and the Python environment in $src/.venv.
OVERLAYNET_VM=1 bash "$src/tools/setup.sh"
agent_bin="$src/.venv/bin/overlaynet-agent"
cli_bin="$src/.venv/bin/overlaynet"

# Variables the agent and the CLI read, passed on only when the caller set them.
passed_env=()
for var in OVERLAYNET_RUN_DIR OVERLAYNET_STATE_DIR; do
  if [ -n "${!var:-}" ]; then
    passed_env+=("$var=${!var}")
  fi
done

# 2. `overlaynet` on PATH talks to this host's agent, also under plain `sudo` (which reads no
#    login profile): a wrapper that defaults the lab to none and the host to this one.
mkdir -p "$root/usr/local/bin" "$root/etc/profile.d"
cat > "$root/usr/local/bin/overlaynet" <<WRAPPER
#!/bin/sh
# overlaynet on $host: the CLI of $src, talking to this host's agent (no lab).
: "\${OVERLAYNET_LAB:=none}"
: "\${OVERLAYNET_HOST:=$host}"
export OVERLAYNET_LAB OVERLAYNET_HOST
$(for kv in "${passed_env[@]}"; do echo ": \"\${${kv%%=*}:=${kv#*=}}\"; export ${kv%%=*}"; done)
exec "$cli_bin" "\$@"
WRAPPER
chmod 0755 "$root/usr/local/bin/overlaynet"
cat > "$root/etc/profile.d/overlaynet.sh" <<PROFILE
# overlaynet: the CLI on this host talks to this host's agent (no lab).
export OVERLAYNET_LAB=none
export OVERLAYNET_HOST=$host
PROFILE

# 3. The agent's unit, written in both modes (in nosystemd mode it documents what would run).
mkdir -p "$root/etc/systemd/system"
cat > "$root/etc/systemd/system/overlaynet-agent.service" <<UNIT
[Unit]
Description=overlaynet agent ($host)
Documentation=file://$src/vagrant/README.md
After=network-online.target chrony.service
Wants=network-online.target

[Service]
ExecStart=$agent_bin --host $host --advertise-addr $addr
$(for kv in "${passed_env[@]}"; do echo "Environment=$kv"; done)
Restart=on-failure
# Containers outlive the agent, as with dockerd's live-restore: only the agent is stopped.
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT

cli() { env "${passed_env[@]}" "$cli_bin" --lab none -H "$host" "$@"; }

wait_for_agent() {
  local deadline=$((SECONDS + ready_seconds))
  until cli version >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "provision: the agent of $host did not answer within ${ready_seconds} s" >&2
      return 1
    fi
    sleep 0.5
  done
}

# 4. Time sync. Gossip refuses messages stamped more than a few seconds away from the
#    receiver's clock (gossip/replay.py: 3.2 s in the lab profile, 8 s in memberlist's LAN
#    profile), and a VM's clock jumps after its host sleeps. chrony rather than
#    systemd-timesyncd: it can also serve the private network, so the VMs agree with node1
#    even without a way out, and `makestep 1 -1` steps any offset over 1 s at any time,
#    where Debian's default steps only during the first three updates.
setup_time_sync() {
  if ! dpkg-query -W -f='${Status}' chrony 2>/dev/null | grep -q "install ok installed"; then
    say "installing chrony (time sync)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chrony >/dev/null
  fi
  # The last makestep in chrony.conf wins, and Debian's comes after its confdir line: so the
  # main file is edited (once), the rest goes to a conf.d file of our own.
  local conf="$root/etc/chrony/chrony.conf"
  if ! grep -qx "makestep 1 -1" "$conf"; then
    sed -i '/^makestep /d' "$conf"
    printf '%s\n' "# overlaynet: step any offset over 1 s, at any time (gossip needs seconds)" \
      "makestep 1 -1" >> "$conf"
  fi
  mkdir -p "$root/etc/chrony/conf.d"
  {
    echo "# overlaynet: the VMs agree on the time with node1, also without a way out."
    if [ -n "$time_server" ] && [ "$time_server" = "$addr" ]; then
      echo "# node1 serves the private network, and keeps serving (stratum 10) while offline."
      echo "allow ${addr%.*}.0/24"
      echo "local stratum 10 orphan"
    elif [ -n "$time_server" ]; then
      echo "server $time_server iburst"
    fi
  } > "$root/etc/chrony/conf.d/overlaynet.conf"
  systemctl enable chrony.service >/dev/null 2>&1
  systemctl restart chrony.service
  # Bounded: 20 tries 1 s apart, done when the correction left is under 1 s (max skew not
  # checked). No answer yet is not fatal; chrony keeps trying.
  chronyc waitsync 20 1 0 1 >/dev/null 2>&1 || say "time not synchronised yet (chronyc tracking)"
}

if [ "$mode" = systemd ]; then
  setup_time_sync
  systemctl daemon-reload
  systemctl enable overlaynet-agent.service >/dev/null 2>&1
  systemctl restart overlaynet-agent.service
else
  say "nosystemd mode: time sync left to the machine; agent started in the background"
  mkdir -p "$root/run" "$root/var/log"
  pid_file="$root/run/overlaynet-agent.pid"
  if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    kill "$(cat "$pid_file")"
    for _ in $(seq 50); do kill -0 "$(cat "$pid_file")" 2>/dev/null || break; sleep 0.1; done
  fi
  # setsid: the agent is not in the provisioner's session, so it outlives it like a service.
  env "${passed_env[@]}" setsid "$agent_bin" --host "$host" --advertise-addr "$addr" \
    </dev/null >>"$root/var/log/overlaynet-agent.out" 2>&1 &
  echo $! > "$pid_file"
fi
wait_for_agent
say "agent running ($addr); $(cli version --format '{{.Server.Version}} pid {{.Server.Pid}}')"
