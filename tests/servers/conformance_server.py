"""A stdio MCP server with the fixtures the MCP conformance suite's server scenarios expect.

The suite (``@modelcontextprotocol/conformance``) calls tools, reads
resources and gets prompts by fixed names (``test_simple_text``,
``test_sampling``, ``test://static-text`` …) and checks exact results. This
server provides them over stdio, in the stateful protocol era, so the suite
can be run *through the gateway*: what is tested is that every message
survives the trip — including server→client requests (sampling, elicitation),
progress, logging and subscriptions.

Run as ``python -m tests.servers.conformance_server`` from the repository root.
Like the demo server (whose stdio loop it reuses), it records every JSON-RPC
message it reads into the file named by ``MCP_ORCH_RECORD``, when that is set,
so a test can assert what the upstream received (``tests.support.Recording``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from upstream.demo_server import InvalidParams, Server

IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
AUDIO = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": {"$anchor": "addressDef", "type": "object",
                          "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

EMPTY = {"type": "object", "properties": {}}


def _tool(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": schema or EMPTY}


TOOLS = [
    _tool("test_simple_text", "Tests simple text content response"),
    _tool("test_image_content", "Tests image content response"),
    _tool("test_audio_content", "Tests audio content response"),
    _tool("test_embedded_resource", "Tests embedded resource content response"),
    _tool("test_multiple_content_types", "Tests response with multiple content types"),
    _tool("test_tool_with_logging", "Tests tool that emits log messages during execution"),
    _tool("test_tool_with_progress", "Tests tool that reports progress notifications"),
    _tool("test_error_handling", "Tests error response handling"),
    _tool("test_reconnection", "Answers after a pause, so the stream can be closed and resumed"),
    _tool("test_sampling", "Tests server-initiated sampling",
          {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}),
    _tool("test_elicitation", "Tests server-initiated elicitation",
          {"type": "object", "properties": {"message": {"type": "string"}},
           "required": ["message"]}),
    _tool("test_elicitation_sep1034_defaults", "Tests elicitation with default values"),
    _tool("test_elicitation_sep1330_enums", "Tests elicitation with enum schemas"),
    {"name": "json_schema_2020_12_tool", "description": "Tool with JSON Schema 2020-12 features",
     "inputSchema": SCHEMA_2020_12},
    # The 2026-07-28 scenarios (stateless, SEP-2575; multi-round trips, SEP-2322). This server
    # stays stateful: it asks the client with ordinary server→client requests, naming each
    # request's id after the key the scenario expects, and the gateway turns the questions
    # into InputRequiredResult rounds.
    _tool("test_missing_capability", "Needs sampling, which the client must declare"),
    _tool("test_streaming_elicitation", "Asks the client one elicitation question"),
    _tool("test_logging_tool", "Emits log messages while it runs"),
    _tool("test_trigger_tool_change", "Announces that the tool list changed"),
    _tool("test_trigger_prompt_change", "Announces that the prompt list changed"),
    _tool("test_input_required_result_elicitation", "Asks the user's name"),
    _tool("test_input_required_result_sampling", "Asks the client's model a question"),
    _tool("test_input_required_result_list_roots", "Asks for the client's roots"),
    _tool("test_input_required_result_request_state", "Asks for a confirmation"),
    _tool("test_input_required_result_multiple_inputs", "Asks three questions at once"),
    _tool("test_input_required_result_multi_round", "Asks two questions, one after the other"),
    _tool("test_input_required_result_tampered_state", "Asks for a confirmation"),
    _tool("test_input_required_result_capabilities",
          "Asks by elicitation, falling back to sampling when the client cannot elicit"),
    _tool("test_header_param", "Echoes an argument that also travels in Mcp-Param-Region",
          {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
           "required": ["region"]}),
]

NAME_QUESTION = {"message": "What is your name?", "requestedSchema": {
    "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}
CONFIRM_QUESTION = {"message": "Please confirm", "requestedSchema": {
    "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}
CAPITAL_QUESTION = {"messages": [{"role": "user", "content": {
    "type": "text", "text": "What is the capital of France?"}}], "maxTokens": 100}

RESOURCES = [
    {"uri": "test://static-text", "name": "static-text", "title": "Static Text Resource",
     "description": "A static text resource for testing", "mimeType": "text/plain"},
    {"uri": "test://static-binary", "name": "static-binary", "title": "Static Binary Resource",
     "description": "A static binary resource (image) for testing", "mimeType": "image/png"},
    {"uri": "test://watched-resource", "name": "watched-resource", "title": "Watched Resource",
     "description": "A resource that can be subscribed to", "mimeType": "text/plain"},
]
TEMPLATES = [
    {"uriTemplate": "test://template/{id}/data", "name": "template", "title": "Resource Template",
     "description": "A resource template with parameter substitution",
     "mimeType": "application/json"},
]
PROMPTS = [
    {"name": "test_simple_prompt", "title": "Simple Test Prompt",
     "description": "A simple prompt without arguments"},
    {"name": "test_prompt_with_arguments", "title": "Prompt With Arguments",
     "description": "A prompt with required arguments",
     "arguments": [{"name": "arg1", "description": "First test argument", "required": True},
                   {"name": "arg2", "description": "Second test argument", "required": True}]},
    {"name": "test_prompt_with_embedded_resource", "title": "Prompt With Embedded Resource",
     "description": "A prompt that includes an embedded resource",
     "arguments": [{"name": "resourceUri", "description": "URI of the resource to embed",
                    "required": True}]},
    {"name": "test_prompt_with_image", "title": "Prompt With Image",
     "description": "A prompt that includes image content"},
    {"name": "test_input_required_result_prompt", "title": "Prompt Needing Input",
     "description": "A prompt that asks the user for its context first"},
]

SEP1034_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {"type": "string", "description": "User status",
                   "enum": ["active", "inactive", "pending"], "default": "active"},
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}
SEP1330_SCHEMA = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "description": "Select one option",
                           "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "description": "Select one option with titles",
                         "oneOf": [{"const": "value1", "title": "First Option"},
                                   {"const": "value2", "title": "Second Option"},
                                   {"const": "value3", "title": "Third Option"}]},
        "legacyEnum": {"type": "string", "description": "Select one option (legacy)",
                       "enum": ["opt1", "opt2", "opt3"],
                       "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "description": "Select multiple options",
                          "minItems": 1, "maxItems": 3,
                          "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "description": "Select multiple options with titles",
                        "minItems": 1, "maxItems": 3,
                        "items": {"anyOf": [{"const": "value1", "title": "First Choice"},
                                            {"const": "value2", "title": "Second Choice"},
                                            {"const": "value3", "title": "Third Choice"}]}},
    },
    "required": [],
}


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


class ConformanceServer(Server):
    """The demo server's stdio machinery with the conformance fixtures instead of its tools."""

    def log(self, level: str, data: Any) -> None:
        self.write({"jsonrpc": "2.0", "method": "notifications/message",
                    "params": {"level": level, "logger": "conformance-test-server", "data": data}})

    def dispatch(self, method: Any, params: dict[str, Any], msg_id: Any) -> dict[str, Any]:
        if method == "initialize":
            self.client_capabilities = params.get("capabilities") or {}
            requested = params.get("protocolVersion")
            return {
                "protocolVersion": requested if requested in VERSIONS else "2025-11-25",
                "capabilities": {"tools": {"listChanged": True},
                                 "resources": {"subscribe": True, "listChanged": True},
                                 "prompts": {"listChanged": True},
                                 "logging": {}, "completions": {}},
                "serverInfo": {"name": "mcp-conformance-test-server", "version": "1.0.0"},
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            return self.call_tool(params, msg_id)
        if method == "resources/list":
            return {"resources": RESOURCES}
        if method == "resources/templates/list":
            return {"resourceTemplates": TEMPLATES}
        if method == "resources/read":
            return self.read(params.get("uri"))
        if method in ("resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            if not isinstance(uri, str):
                raise InvalidParams("uri is required")
            (self.watched.add if method == "resources/subscribe" else self.watched.discard)(uri)
            verb = "Subscribed to" if method == "resources/subscribe" else "Unsubscribed from"
            self.log("info", f"{verb} resource: {uri}")
            return {}
        if method == "prompts/list":
            return {"prompts": PROMPTS}
        if method == "prompts/get":
            return self.prompt(params.get("name"), params.get("arguments") or {})
        if method == "logging/setLevel":
            self.log("info", f"Log level set to: {params.get('level')}")
            return {}
        if method == "completion/complete":
            return {"completion": {"values": [], "total": 0, "hasMore": False}}
        raise KeyError(method)

    def read(self, uri: Any) -> dict[str, Any]:
        if uri == "test://static-text":
            return {"contents": [{"uri": uri, "mimeType": "text/plain",
                                  "text": "This is the content of the static text resource."}]}
        if uri == "test://static-binary":
            return {"contents": [{"uri": uri, "mimeType": "image/png", "blob": IMAGE}]}
        if uri == "test://watched-resource":
            return {"contents": [{"uri": uri, "mimeType": "text/plain",
                                  "text": "Watched resource content"}]}
        if isinstance(uri, str) and uri.startswith("test://template/") and uri.endswith("/data"):
            ident = uri[len("test://template/"):-len("/data")]
            body = {"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"}
            return {"contents": [{"uri": uri, "mimeType": "application/json",
                                  "text": json.dumps(body, separators=(",", ":"))}]}
        raise ResourceNotFound(uri)

    def prompt(self, name: Any, args: dict[str, Any]) -> dict[str, Any]:
        def user(content: dict[str, Any]) -> dict[str, Any]:
            return {"role": "user", "content": content}

        if name == "test_simple_prompt":
            return {"messages": [user({"type": "text",
                                       "text": "This is a simple prompt for testing."})]}
        if name == "test_prompt_with_arguments":
            return {"messages": [user({"type": "text", "text":
                    f"Prompt with arguments: arg1='{args.get('arg1')}', arg2='{args.get('arg2')}'"})]}
        if name == "test_prompt_with_embedded_resource":
            return {"messages": [
                user({"type": "resource", "resource": {
                    "uri": args.get("resourceUri"), "mimeType": "text/plain",
                    "text": "Embedded resource content for testing."}}),
                user({"type": "text", "text": "Please process the embedded resource above."}),
            ]}
        if name == "test_prompt_with_image":
            return {"messages": [
                user({"type": "image", "data": IMAGE, "mimeType": "image/png"}),
                user({"type": "text", "text": "Please analyze the image above."}),
            ]}
        if name == "test_input_required_result_prompt":
            reply = self.request_client("elicitation/create", {
                "message": "What context should the prompt use?", "requestedSchema": {
                    "type": "object", "properties": {"context": {"type": "string"}},
                    "required": ["context"]}}, msg_id="user_context")
            context = ((reply.get("result") or {}).get("content") or {}).get("context")
            return {"messages": [user({"type": "text", "text": f"Use this context: {context}"})]}
        raise InvalidParams(f"unknown prompt {name!r}")

    def call_tool(self, params: dict[str, Any], msg_id: Any) -> dict[str, Any]:
        name = params.get("name")
        args = params.get("arguments") or {}
        if name == "test_simple_text":
            return text("This is a simple text response for testing.")
        if name == "test_image_content":
            return {"content": [{"type": "image", "data": IMAGE, "mimeType": "image/png"}]}
        if name == "test_audio_content":
            return {"content": [{"type": "audio", "data": AUDIO, "mimeType": "audio/wav"}]}
        if name == "test_embedded_resource":
            return {"content": [{"type": "resource", "resource": {
                "uri": "test://embedded-resource", "mimeType": "text/plain",
                "text": "This is an embedded resource content."}}]}
        if name == "test_multiple_content_types":
            return {"content": [
                {"type": "text", "text": "Multiple content types test:"},
                {"type": "image", "data": IMAGE, "mimeType": "image/png"},
                {"type": "resource", "resource": {
                    "uri": "test://mixed-content-resource", "mimeType": "application/json",
                    "text": json.dumps({"test": "data", "value": 123})}},
            ]}
        if name == "test_tool_with_logging":
            for i, line in enumerate(("Tool execution started", "Tool processing data",
                                      "Tool execution completed")):
                if i:
                    time.sleep(0.05)
                self.write({"jsonrpc": "2.0", "method": "notifications/message",
                            "params": {"level": "info", "data": line}})
            return text("Tool with logging executed successfully")
        if name == "test_tool_with_progress":
            token = (params.get("_meta") or {}).get("progressToken", 0)
            for step in (0, 50, 100):
                if step:
                    time.sleep(0.05)
                self.write({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                    "progressToken": token, "progress": step, "total": 100,
                    "message": f"Completed step {step} of 100"}})
            return text(str(token))
        if name == "test_error_handling":
            return {"content": [{"type": "text",
                                 "text": "This tool intentionally returns an error for testing"}],
                    "isError": True}
        if name == "test_sampling":
            try:
                reply = self.request_client("sampling/createMessage", {
                    "messages": [{"role": "user", "content": {"type": "text",
                                                              "text": str(args.get("prompt"))}}],
                    "maxTokens": 100})
            except TimeoutError as exc:
                return text(f"Sampling not supported or error: {exc}")
            if "error" in reply:
                return text(f"Sampling not supported or error: {reply['error'].get('message')}")
            result = reply.get("result") or {}
            content = result.get("content") or {}
            answer = content.get("text") if isinstance(content, dict) else None
            return text(f"LLM response: {answer or 'No response'}")
        if name in ("test_elicitation", "test_elicitation_sep1034_defaults",
                    "test_elicitation_sep1330_enums"):
            if name == "test_elicitation":
                request = {"message": str(args.get("message")), "requestedSchema": {
                    "type": "object",
                    "properties": {"response": {"type": "string", "description": "User's response"}},
                    "required": ["response"]}}
                prefix = "User response"
            elif name == "test_elicitation_sep1034_defaults":
                request = {"message": "Please review and update the form fields with defaults",
                           "requestedSchema": SEP1034_SCHEMA}
                prefix = "Elicitation completed"
            else:
                request = {"message": "Please select options from the enum fields",
                           "requestedSchema": SEP1330_SCHEMA}
                prefix = "Elicitation completed"
            try:
                reply = self.request_client("elicitation/create", request)
            except TimeoutError as exc:
                return text(f"Elicitation not supported or error: {exc}")
            if "error" in reply:
                return text(f"Elicitation not supported or error: {reply['error'].get('message')}")
            result = reply.get("result") or {}
            content = json.dumps(result.get("content") or {}, separators=(",", ":"))
            return text(f"{prefix}: action={result.get('action')}, content={content}")
        if name == "test_reconnection":
            # The reference closes its stream here; through the gateway the
            # stream's life is the gateway's business (gateway.sse_poll_s).
            time.sleep(0.3)
            return text("Reconnection test completed successfully. If you received this, the "
                        "client properly reconnected after stream closure.")
        if name == "test_header_param":
            return text(f"region: {args.get('region')}")
        if name.startswith("test_") and (answer := self.call_2026_tool(name)) is not None:
            return answer
        if name == "json_schema_2020_12_tool":
            return text(f"JSON Schema 2020-12 tool called with: {json.dumps(args)}")
        return {"content": [{"type": "text", "text": f"unknown tool: {name}"}], "isError": True}

    def call_2026_tool(self, name: str) -> dict[str, Any] | None:
        """The tools of the 2026-07-28 scenarios; ``None`` for other names."""
        def failed(reply: dict[str, Any]) -> dict[str, Any] | None:
            if "error" in reply:
                return {"content": [{"type": "text", "text": reply["error"].get("message", "")}],
                        "isError": True}
            return None

        def content(reply: dict[str, Any]) -> dict[str, Any]:
            return (reply.get("result") or {}).get("content") or {}

        if name == "test_missing_capability":
            reply = self.request_client("sampling/createMessage", CAPITAL_QUESTION)
            return failed(reply) or text(f"sampled: {content(reply).get('text')}")
        if name in ("test_streaming_elicitation", "test_input_required_result_elicitation"):
            reply = self.request_client("elicitation/create", NAME_QUESTION, msg_id="user_name")
            return failed(reply) or text(f"Hello, {content(reply).get('name')}!")
        if name == "test_logging_tool":
            for line in ("logging tool started", "logging tool finished"):
                self.log("info", line)
            return text("logged")
        if name == "test_trigger_tool_change":
            self.write({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            return text("tool list changed")
        if name == "test_trigger_prompt_change":
            self.write({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"})
            return text("prompt list changed")
        if name == "test_input_required_result_sampling":
            reply = self.request_client("sampling/createMessage", CAPITAL_QUESTION,
                                        msg_id="capital_question")
            return failed(reply) or text(f"The model said: {content(reply).get('text')}")
        if name == "test_input_required_result_list_roots":
            reply = self.request_client("roots/list", {}, msg_id="client_roots")
            roots = (reply.get("result") or {}).get("roots") or []
            return failed(reply) or text(f"{len(roots)} root(s)")
        if name in ("test_input_required_result_request_state",
                    "test_input_required_result_tampered_state"):
            reply = self.request_client("elicitation/create", CONFIRM_QUESTION, msg_id="confirm")
            return failed(reply) or text(f"confirmed: {content(reply).get('ok')}")
        if name == "test_input_required_result_multiple_inputs":
            replies = self.request_client_many([
                ("user_name", "elicitation/create", NAME_QUESTION),
                ("greeting", "sampling/createMessage", {"messages": [{"role": "user", "content": {
                    "type": "text", "text": "Generate a greeting"}}], "maxTokens": 50}),
                ("client_roots", "roots/list", {}),
            ])
            for reply in replies:
                if (refusal := failed(reply)) is not None:
                    return refusal
            return text(f"{content(replies[1]).get('text')}, {content(replies[0]).get('name')}!")
        if name == "test_input_required_result_multi_round":
            first = self.request_client("elicitation/create", {
                **NAME_QUESTION, "message": "Step 1: What is your name?"}, msg_id="step1")
            if (refusal := failed(first)) is not None:
                return refusal
            second = self.request_client("elicitation/create", {
                "message": "Step 2: What is your favorite color?", "requestedSchema": {
                    "type": "object", "properties": {"color": {"type": "string"}},
                    "required": ["color"]}}, msg_id="step2")
            return failed(second) or text(
                f"{content(first).get('name')} likes {content(second).get('color')}")
        if name == "test_input_required_result_capabilities":
            reply = self.request_client("elicitation/create", NAME_QUESTION, msg_id="user_name")
            if "error" in reply:  # the client cannot elicit: ask its model instead
                reply = self.request_client("sampling/createMessage", CAPITAL_QUESTION,
                                            msg_id="capital_question")
            return failed(reply) or text("answered")
        return None

    def handle(self, message: dict[str, Any]) -> None:
        try:
            super().handle(message)
        except ResourceNotFound as exc:
            self.write({"jsonrpc": "2.0", "id": message.get("id"), "error": {
                "code": -32002, "message": f"Resource not found: {exc.uri}",
                "data": {"uri": exc.uri}}})


class ResourceNotFound(Exception):
    def __init__(self, uri: Any) -> None:
        super().__init__(uri)
        self.uri = uri


def main() -> None:
    print("conformance fixture server ready on stdio", file=sys.stderr, flush=True)
    ConformanceServer().run()


if __name__ == "__main__":
    main()
