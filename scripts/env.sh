# Source this to put the project's tools first on PATH: .venv, local Node 22, npm peers.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$_root/.venv/bin:$_root/.tools/node22/node_modules/.bin:$_root/tests/interop/node_modules/.bin:$PATH"
unset _root
