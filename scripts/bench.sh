#!/usr/bin/env bash
# Run the benchmark suite (after scripts/setup.sh): prints a table, writes bench/results/*.json.
# Shows its progress on stderr (one line per step when stderr is not a terminal).
# Extra arguments go to bench/run.py (e.g. --smoke, --quiet).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec python -m bench.run "$@"
