#!/usr/bin/env bash
# Run the benchmark suite (after scripts/setup.sh): prints a table, writes bench/results/*.json.
# Extra arguments go to bench/run.py (e.g. --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec python -m bench.run "$@"
