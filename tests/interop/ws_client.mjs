// The TypeScript SDK 1.x WebSocket client (WebSocketClientTransport) as a peer of the gateway.
//
// Usage: node ws_client.mjs <ws url> <tool> '<arguments as JSON>'
// Connects with Client + WebSocketClientTransport (subprotocol "mcp", Node's
// global WebSocket: no headers, so the project must be auth = "none"), lists
// the tools, calls one, and prints one JSON object on stdout:
//   {"server": serverInfo, "tools": [names], "result": the call's result}
// Exits non-zero on any failure (a refused upgrade, an error result, a timeout).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { WebSocketClientTransport } from "@modelcontextprotocol/sdk/client/websocket.js";

const [url, tool, rawArgs = "{}"] = process.argv.slice(2);
if (!url || !tool) {
  console.error("usage: node ws_client.mjs <ws url> <tool> '<arguments as JSON>'");
  process.exit(2);
}

const client = new Client({ name: "mcp-orch-interop-ws", version: "1.0.0" });
const transport = new WebSocketClientTransport(new URL(url));
let closedEarly = false;
transport.onclose = () => { closedEarly = true; };
try {
  await client.connect(transport);
  const tools = await client.listTools(undefined, { timeout: 30000 });
  const result = await client.callTool({ name: tool, arguments: JSON.parse(rawArgs) },
                                       undefined, { timeout: 30000 });
  if (result.isError) throw new Error(`the call failed: ${JSON.stringify(result)}`);
  if (closedEarly) throw new Error("the socket closed during the session");
  process.stdout.write(JSON.stringify({
    server: client.getServerVersion(),
    tools: tools.tools.map((t) => t.name),
    result,
  }) + "\n");
  await client.close();
  process.exit(0);
} catch (error) {
  console.error(`ws_client: ${error?.stack ?? error}`);
  process.exit(1);
}
