#!/usr/bin/env bash
# Idempotent set-up: installs the Debian packages and the Python environment overlaynet needs.
# Safe to run again and again; it only installs what is missing. Needs root (namespaces do too).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  iproute2 iputils-ping iperf3 bind9-dnsutils tcpdump ethtool procps psmisc
  util-linux kmod dnsperf python3-venv
  busybox-static nftables python3-nftables conntrack graphviz tshark
  gcc libc6-dev
)
# Only where the tests run (not on the VMs that provision.sh sets up): `vagrant validate`, the
# real browser that drives the web view's tests, and the sanitizer runtimes the C helpers'
# hostile-input tests preload.
if [ -z "${OVERLAYNET_VM:-}" ]; then
  DEBIAN_PACKAGES+=(vagrant chromium chromium-driver libasan8 libubsan1)
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "overlaynet set-up needs root (network namespaces do): run it with sudo" >&2
  exit 1
fi

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "set-up: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark's wireshark-common asks whether non-root users may capture: no (overlaynet runs as
  # root), and answered here so the install never waits for a question.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "set-up: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.overlaynet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "set-up: installing overlaynet and its Python dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e '.[test,bench]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import overlaynet, trio, pyroute2, dnslib, scapy, pytest_trio, hypothesis'
  touch "$stamp"
fi
# libnftables' Python binding comes from Debian (python3-nftables), not PyPI: link it into the
# virtual environment so service load balancing can drive nftables through its JSON API.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
if [ ! -e "$site/nftables" ] && [ -d /usr/lib/python3/dist-packages/nftables ]; then
  ln -s /usr/lib/python3/dist-packages/nftables "$site/nftables"
fi
# Build the VTEP's optional C helpers once now (else on a VTEP's first start); a failure only
# keeps the pure-Python path, and says why.
.venv/bin/python - <<'PY' || true
from overlaynet.dataplane import accel
for name in ("egress", "ingress"):
    if accel.load(name) is None:
        print(f"set-up: C helper {name}: {accel.why_not(name)} (the Python path runs)")
PY
