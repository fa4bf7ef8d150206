#!/usr/bin/env bash
# Run the whole test suite (after scripts/setup.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ruff check gateway actors upstream config tests bench
args=()
if [ "${CI:-}" = "true" ]; then args+=(-p no:cacheprovider); fi
exec python -m pytest "${args[@]}" "$@"
