#!/usr/bin/env bash
# The main job: set up what is missing, then walk through the tutorial on a one-machine lab.
# Extra arguments go to `overlaynet lab demo` (e.g. --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/overlaynet lab demo "$@"
