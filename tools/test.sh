#!/usr/bin/env bash
# The test command: set up what is missing, then lint, type-check and run the whole suite.
# Extra arguments go to pytest (e.g. tools/test.sh tests/unit -k ipam).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
ruff format --check .
mypy
extra=$(find benchmarks tools -name '*.py' 2>/dev/null)
[ -z "$extra" ] || mypy $extra
exec pytest "$@"
