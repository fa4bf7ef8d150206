#!/usr/bin/env bash
# Run the gateway on the example config, after creating and printing a demo key.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
CONFIG=${CONFIG:-config/example.toml}
KEY=$(mcp-orch keys create --project demo --name "demo-$(date +%s)" --config "$CONFIG" | tail -n 1)
URL=http://127.0.0.1:8000/projects/demo/servers/demo/sse
cat <<MSG

  mcp-orch demo project key (shown once; stored only as a hash):

    $KEY

  List the demo server's tools with MCP Inspector's CLI:

    npx -y @modelcontextprotocol/inspector@2 --cli $URL --transport sse \\
      --header "Authorization: Bearer $KEY" --method tools/list

  Or open the Inspector UI (npx -y @modelcontextprotocol/inspector@2), choose
  transport "SSE", URL $URL, and add the header
  Authorization: Bearer $KEY

  Health: curl http://127.0.0.1:8000/health

MSG
exec mcp-orch serve --config "$CONFIG"
