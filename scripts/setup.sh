#!/usr/bin/env bash
# Set up everything mcp-orch needs, idempotently: the Python virtualenv with the
# package and its test extras (psycopg for the PostgreSQL store among them), Debian's
# chromium, postgresql and haproxy where missing, Node >= 22 (from the npm package node@22, under
# .tools/, only when the system node is older), and the npm test peers.
# A second run with nothing changed takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '[setup] %s\n' "$*" >&2; }

# --- Python -------------------------------------------------------------------
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      PY=$candidate; break
    fi
  done
fi
[ -n "$PY" ] || { say "Python >= 3.11 is required"; exit 1; }

stamp_of() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }

py_stamp=$(stamp_of pyproject.toml)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.stamp 2>/dev/null)" != "$py_stamp" ]; then
  [ -x .venv/bin/python ] || { say "creating .venv with $("$PY" --version)…"; "$PY" -m venv .venv; }
  say "installing mcp-orch with its test extras into .venv (pip; a minute or two the first time)…"
  .venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install --quiet -e ".[test,telemetry]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import gateway, actors, upstream, config, mcp, pytest_trio, psycopg" \
    || { say "the Python install failed"; exit 1; }
  echo "$py_stamp" > .venv/.stamp
fi

# --- Debian packages: chromium (tests/browser), PostgreSQL and HAProxy (tests/cluster) --
# `playwright install` downloads its own browser build, which this network does not
# allow; the system package works with Playwright's executable_path. The cluster
# tests start PostgreSQL (initdb/pg_ctl) and HAProxy themselves, on free ports.
# One apt-get update and one install for whatever is missing.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing Debian's ${missing[*]} (apt-get update + install; a minute or two)…"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
    # The package starts a cluster of its own on port 5432; the tests start theirs.
    if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v pg_ctlcluster >/dev/null 2>&1; then
      for conf in /etc/postgresql/*/main; do
        [ -d "$conf" ] || continue
        version=$(basename "$(dirname "$conf")")
        pg_ctlcluster "$version" main stop 2>/dev/null || true
      done
    fi
  else
    say "missing ${missing[*]} and no root apt-get: the tests needing them are skipped"
  fi
fi

# --- the benchmark baseline (mcp-proxy, PyPI) in a virtualenv of its own --------
# It needs the official SDK 1.x; ours is 2.x, so they cannot share an environment.
if [ ! -x .venv-baseline/bin/mcp-proxy ]; then
  say "installing the benchmark baseline, mcp-proxy 0.13.0, into .venv-baseline (pip; about a minute)…"
  "$PY" -m venv .venv-baseline
  .venv-baseline/bin/python -m pip install --quiet "mcp-proxy==0.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  .venv-baseline/bin/mcp-proxy --version >/dev/null || { say "mcp-proxy did not install"; exit 1; }
fi

# --- the Python SDK 1.x WebSocket client (interop tests) in a virtualenv of its own --
# mcp.client.websocket was removed in 2.x; the baseline venv is left as the
# benchmark measured it.
MCP1_SPEC="mcp[ws]==1.30.0"
if [ ! -x .venv-mcp1/bin/python ] || [ "$(cat .venv-mcp1/.stamp 2>/dev/null)" != "$MCP1_SPEC" ]; then
  say "installing the Python SDK 1.x WebSocket client, $MCP1_SPEC, into .venv-mcp1 (pip; about a minute)…"
  [ -x .venv-mcp1/bin/python ] || "$PY" -m venv .venv-mcp1
  .venv-mcp1/bin/python -m pip install --quiet "$MCP1_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
  .venv-mcp1/bin/python -c "import mcp.client.websocket, websockets" \
    || { say "the Python SDK 1.x WebSocket client did not install"; exit 1; }
  echo "$MCP1_SPEC" > .venv-mcp1/.stamp
fi

# --- Node >= 22 ---------------------------------------------------------------
node_major() { "${1:-node}" --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/' || echo 0; }
NODE22_BIN=$ROOT/.tools/node22/node_modules/.bin
if ! command -v npm >/dev/null 2>&1; then
  say "npm not found: Node.js (>= 20, with npm) is required for the interop peers"; exit 1
fi
if [ "$(node_major node)" -lt 22 ] && [ "$(node_major "$NODE22_BIN/node")" -lt 22 ]; then
  say "installing Node 22 under .tools/node22 (system node is $(node --version); npm, a minute or more)…"
  mkdir -p .tools/node22
  npm install --silent --no-audit --no-fund --prefix .tools/node22 node@22 >/dev/null
  [ "$(node_major "$NODE22_BIN/node")" -ge 22 ] || { say "Node 22 install failed"; exit 1; }
fi
if [ -x "$NODE22_BIN/node" ]; then export PATH="$NODE22_BIN:$PATH"; fi

# --- npm peers (installed under Node 22: inspector@2 needs it) ------------------
npm_stamp=$(stamp_of tests/interop/package.json tests/interop/package-lock.json)
if [ "$(cat tests/interop/node_modules/.stamp 2>/dev/null)" != "$npm_stamp" ]; then
  say "installing the npm peers with node $(node --version) (npm; a minute or two the first time)…"
  (cd tests/interop && if [ -f package-lock.json ]; then
     npm ci --silent --no-audit --no-fund >/dev/null
   else
     npm install --silent --no-audit --no-fund >/dev/null
   fi)
  tests/interop/node_modules/.bin/mcp-inspector --version >/dev/null \
    || { say "MCP Inspector did not install"; exit 1; }
  stamp_of tests/interop/package.json tests/interop/package-lock.json > tests/interop/node_modules/.stamp
fi
say "ready: $(.venv/bin/python --version), node $(node --version), inspector $(tests/interop/node_modules/.bin/mcp-inspector --version 2>/dev/null)"
