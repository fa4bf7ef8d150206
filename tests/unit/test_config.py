"""Config loading: a good file becomes frozen values; every mistake names file, field, expectation."""

from __future__ import annotations

import textwrap
import types
from pathlib import Path
from typing import Any

import attrs
import pytest

import config
from config import (
    Config,
    ConfigError,
    RestartPolicy,
    ServerConfig,
    default_config_path,
    expand_env,
    load_config,
)

GOOD = """
[gateway]
host = "0.0.0.0"
port = 0
state_dir = "var/state"

[projects.demo]
auth = "none"

[projects.demo.servers.echo]
command = "python"
args = ["-m", "upstream.demo_server"]
env = { LOG_LEVEL = "info", TOKEN = "${SECRET}" }
cwd = "work"
isolation = "session"
request_timeout_s = 5

[projects.demo.servers.echo.restart]
max_restarts = 0
window_s = 10

[projects.demo.servers.other]
command = "npx"
enabled = false

[projects.second]
"""


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, str(info.value)


def test_public_names_are_exported() -> None:
    for name in (
        "Config",
        "GatewaySettings",
        "ProjectConfig",
        "ServerConfig",
        "RestartPolicy",
        "ConfigError",
        "load_config",
        "default_config_path",
        "expand_env",
        "Store",
    ):
        assert hasattr(config, name), name


def test_good_config(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, "good.toml")
    cfg = load_config(path)

    assert isinstance(cfg, Config)
    assert cfg.source == str(path)
    assert cfg.gateway.host == "0.0.0.0"
    assert cfg.gateway.port == 0
    assert cfg.gateway.state_dir == str((tmp_path / "var" / "state").resolve())
    assert Path(cfg.gateway.state_dir).is_absolute()
    assert cfg.gateway.session_queue == 256  # default

    assert list(cfg.projects) == ["demo", "second"]
    assert len(cfg.projects) == 2
    demo = cfg.projects["demo"]
    assert demo.name == "demo"
    assert demo.auth == "none"
    assert cfg.projects["second"].auth == "api-key"
    assert len(cfg.projects["second"].servers) == 0

    assert list(demo.servers) == ["echo", "other"]
    echo = demo.servers["echo"]
    assert echo.name == "echo"
    assert echo.command == "python"
    assert echo.args == ("-m", "upstream.demo_server")
    assert isinstance(echo.args, tuple)
    # ${VAR} is kept as written: expansion happens when the process is spawned.
    assert dict(echo.env.items()) == {"LOG_LEVEL": "info", "TOKEN": "${SECRET}"}
    assert echo.env["LOG_LEVEL"] == "info"
    assert echo.cwd == str((tmp_path / "work").resolve())
    assert echo.isolation == "session"
    assert echo.request_timeout_s == 5.0
    assert echo.restart == RestartPolicy(max_restarts=0, window_s=10.0)

    other = demo.servers["other"]
    assert other.args == ()
    assert len(other.env) == 0
    assert other.enabled is False
    assert other.isolation == "shared"
    assert other.restart == RestartPolicy()


def test_loaded_config_is_immutable(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD, "good.toml"))
    echo = cfg.projects["demo"].servers["echo"]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        echo.command = "sh"  # type: ignore[misc]
    with pytest.raises(TypeError):
        echo.env["LOG_LEVEL"] = "debug"  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.projects["demo"].servers["x"] = echo  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.projects["new"] = cfg.projects["demo"]  # type: ignore[index]


def test_constructed_models_freeze_their_mappings() -> None:
    env = {"A": "1"}
    server = ServerConfig(name="s", command="c", env=env)
    env["A"] = "2"
    assert server.env["A"] == "1"
    assert isinstance(server.env, types.MappingProxyType)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "", "empty.toml"))
    assert cfg.gateway.port == 8000
    assert cfg.gateway.host == "127.0.0.1"
    assert cfg.gateway.state_dir == str((tmp_path / "state").resolve())
    assert len(cfg.projects) == 0


def test_absolute_state_dir_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    cfg = load_config(write(tmp_path, f'[gateway]\nstate_dir = "{target}"\n', "abs.toml"))
    assert cfg.gateway.state_dir == str(target)


SERVER = "[projects.demo.servers.x]\n"


@pytest.mark.parametrize(
    ("text", "field", "expectation"),
    [
        pytest.param(
            SERVER + 'command = "a"\n[projects.demo.servers.x.restart]\nmax_restarts = "five"\n',
            "projects.demo.servers.x.restart.max_restarts",
            "expected int, got 'five'",
            id="wrong-type-nested",
        ),
        pytest.param(
            SERVER + "args = []\n",
            "projects.demo.servers.x.command",
            "expected a command (or a url for a remote server)",
            id="missing-command",
        ),
        pytest.param(
            SERVER + 'url = "ftp://example.com/mcp"\n',
            "projects.demo.servers.x.url",
            "expected an http://, https://, ws:// or wss:// URL",
            id="url-scheme",
        ),
        pytest.param(
            SERVER + 'url = "http://127.0.0.1:9/mcp"\ntransport = "stdio"\n',
            "projects.demo.servers.x.transport",
            "expected one of 'streamable-http', 'sse', 'websocket', got 'stdio'",
            id="transport-choice",
        ),
        pytest.param(
            SERVER + 'url = "http://127.0.0.1:9/mcp"\ntransport = "websocket"\n',
            "projects.demo.servers.x.transport",
            "expected 'streamable-http' or 'sse' for an http:// or https:// url "
            "('websocket' needs a ws:// or wss:// url), got 'websocket'",
            id="websocket-transport-with-http-url",
        ),
        pytest.param(
            SERVER + 'url = "wss://mcp.example.com/ws"\ntransport = "sse"\n',
            "projects.demo.servers.x.transport",
            "expected 'websocket' for a ws:// or wss:// url (or no transport), got 'sse'",
            id="sse-transport-with-ws-url",
        ),
        pytest.param(
            SERVER + 'url = "ws://127.0.0.1:9/"\ntransport = "streamable-http"\n',
            "projects.demo.servers.x.transport",
            "expected 'websocket' for a ws:// or wss:// url (or no transport), "
            "got 'streamable-http'",
            id="streamable-transport-with-ws-url",
        ),
        pytest.param(
            SERVER + 'command = "a"\nargs = "npx"\n',
            "projects.demo.servers.x.args",
            "expected an array of strings, got 'npx'",
            id="str-for-list",
        ),
        pytest.param(
            SERVER + 'command = "a"\nargs = ["-y", 3]\n',
            "projects.demo.servers.x.args",
            "expected an array of strings, found 3",
            id="non-str-in-list",
        ),
        pytest.param(
            "[gateway]\nport = true\n",
            "gateway.port",
            "expected int, got true",
            id="bool-for-int",
        ),
        pytest.param(
            SERVER + 'command = "a"\nrestart = { max_restarts = false }\n',
            "projects.demo.servers.x.restart.max_restarts",
            "expected int, got false",
            id="bool-for-int-nested",
        ),
        pytest.param(
            SERVER + 'command = "a"\nrequest_timeout_s = true\n',
            "projects.demo.servers.x.request_timeout_s",
            "expected a number, got true",
            id="bool-for-float",
        ),
        pytest.param(
            "[gateway]\nport = 80.5\n",
            "gateway.port",
            "expected int, got 80.5",
            id="float-for-int",
        ),
        pytest.param(
            SERVER + 'command = "a"\nenabled = "yes"\n',
            "projects.demo.servers.x.enabled",
            "expected true or false, got 'yes'",
            id="str-for-bool",
        ),
        pytest.param(
            SERVER + 'command = "a"\nenv = { A = 1 }\n',
            "projects.demo.servers.x.env",
            "expected a string for 'A', got 1",
            id="env-value-not-str",
        ),
        pytest.param(
            SERVER + 'command = "a"\nrestart = 5\n',
            "projects.demo.servers.x.restart",
            "expected a table, got 5",
            id="scalar-for-table",
        ),
        pytest.param(
            "[projects.demo.servers]\nx = 1\n",
            "projects.demo.servers.x",
            "expected a table, got 1",
            id="scalar-for-server",
        ),
        pytest.param(
            "[gateway]\nport = 65536\n",
            "gateway.port",
            "expected a port 0..65535, got 65536",
            id="port-too-big",
        ),
        pytest.param(
            "[gateway]\nport = -1\n",
            "gateway.port",
            "expected a port 0..65535, got -1",
            id="port-negative",
        ),
        pytest.param(
            SERVER + 'command = "a"\nisolation = "per-client"\n',
            "projects.demo.servers.x.isolation",
            "expected one of 'shared', 'session', got 'per-client'",
            id="isolation",
        ),
        pytest.param(
            '[projects.demo]\nauth = "token"\n',
            "projects.demo.auth",
            "expected one of 'api-key', 'none', got 'token'",
            id="auth",
        ),
        pytest.param(
            SERVER + 'command = "a"\nrequest_timeout_s = 0\n',
            "projects.demo.servers.x.request_timeout_s",
            "expected a number > 0, got 0.0",
            id="timeout-zero",
        ),
        pytest.param(
            SERVER + 'command = "a"\nrestart = { max_restarts = -1 }\n',
            "projects.demo.servers.x.restart.max_restarts",
            "expected an int >= 0, got -1",
            id="max-restarts-negative",
        ),
        pytest.param(
            SERVER + 'command = "a"\nrestart = { window_s = 0 }\n',
            "projects.demo.servers.x.restart.window_s",
            "expected a number > 0, got 0.0",
            id="window-zero",
        ),
        pytest.param(
            "[gateway]\ninput_wait_s = 0\n",
            "gateway.input_wait_s",
            "expected a number > 0, got 0",
            id="input-wait-zero",
        ),
        pytest.param(
            SERVER + 'command = "a"\nrestart = { backoff_initial_s = -0.5 }\n',
            "projects.demo.servers.x.restart.backoff_initial_s",
            "expected a number > 0, got -0.5",
            id="backoff-negative",
        ),
        pytest.param(
            SERVER + 'command = ""\n',
            "projects.demo.servers.x.command",
            "expected a command (or a url for a remote server), got ''",
            id="empty-command",
        ),
        pytest.param(
            SERVER + 'command = "a"\nenv = { T = "${TOKEN" }\n',
            "projects.demo.servers.x.env.T",
            "malformed variable reference",
            id="malformed-env-ref",
        ),
        pytest.param(
            '[projects."my project".servers.x]\ncommand = "a"\n',
            "projects",
            "invalid name 'my project': expected only letters, digits",
            id="bad-project-name",
        ),
        pytest.param(
            '[projects.demo.servers."a/b"]\ncommand = "a"\n',
            "projects.demo.servers",
            "invalid name 'a/b'",
            id="bad-server-name",
        ),
        pytest.param(
            '[projects.demo.servers."x\\n"]\ncommand = "a"\n',
            "projects.demo.servers",
            "invalid name 'x\\n'",
            id="trailing-newline-in-name",
        ),
    ],
)
def test_errors_name_file_field_and_expectation(
    tmp_path: Path, text: str, field: str, expectation: str
) -> None:
    path, message = load_error(tmp_path, text)
    assert message.startswith(f"{path}: {field}: "), message
    assert expectation in message


def test_unknown_field_suggests_the_known_one(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, SERVER + 'comand = "npx"\n')
    lines = message.splitlines()
    unknown = [line for line in lines if "unknown field" in line]
    assert unknown == [
        f"{path}: projects.demo.servers.x: unknown field 'comand' (did you mean 'command'?); "
        "expected one of: command, args, env, cwd, url, transport, headers, isolation, "
        "request_timeout_s, first_start_timeout_s, restart, enabled, prefix, tools"
    ]


def test_unknown_field_nested_and_gateway(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, SERVER + 'command = "a"\n[projects.demo.servers.x.restart]\nmax_restart = 1\n'
    )
    assert message.startswith(
        f"{path}: projects.demo.servers.x.restart: unknown field 'max_restart' "
        "(did you mean 'max_restarts'?)"
    )
    path, message = load_error(tmp_path, '[gateway]\nhots = "::1"\n')
    assert message.startswith(f"{path}: gateway: unknown field 'hots' (did you mean 'host'?)")


def test_unknown_top_level_and_name_field(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, "[gatway]\nport = 1\n")
    assert message == f"{path}: unknown top-level field 'gatway' (expected gateway, projects)"
    path, message = load_error(tmp_path, SERVER + 'command = "a"\nname = "y"\n')
    assert message.startswith(f"{path}: projects.demo.servers.x: unknown field 'name'")


def test_several_errors_reported_together(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, SERVER + 'command = "a"\nargs = "npx"\nrequest_timeout_s = "soon"\n'
    )
    assert f"{path}: projects.demo.servers.x.args: expected an array of strings" in message
    assert f"{path}: projects.demo.servers.x.request_timeout_s: expected a number, got 'soon'" in (
        message
    )


def test_zero_restarts_and_port_zero_are_valid(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "[gateway]\nport = 0\n" + SERVER + 'command = "a"\nrestart = { max_restarts = 0 }\n',
            "ok.toml",
        )
    )
    assert cfg.gateway.port == 0
    assert cfg.projects["demo"].servers["x"].restart.max_restarts == 0


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, '[gateway]\nhost = "a"\nport = \n')
    assert message.startswith(f"{path}: TOML syntax error")
    assert "line 3" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: cannot read the config file")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read the config file")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe[gateway]")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not UTF-8 text")


# --- expand_env -------------------------------------------------------------


def test_expand_env_replaces_embedded_references() -> None:
    env = {"URL": "https://${HOST}:${PORT}/x", "PLAIN": "$HOME stays", "LIT": "a$${B}c"}
    assert expand_env(env, {"HOST": "h", "PORT": "1", "HOME": "/root"}) == {
        "URL": "https://h:1/x",
        "PLAIN": "$HOME stays",
        "LIT": "a${B}c",
    }


def test_expand_env_empty_value_is_allowed() -> None:
    assert expand_env({"A": "${E}"}, {"E": ""}) == {"A": ""}


def test_expand_env_returns_a_new_dict() -> None:
    env = types.MappingProxyType({"A": "${X}"})
    result = expand_env(env, {"X": "1"})
    assert result == {"A": "1"}
    assert env["A"] == "${X}"


def test_expand_env_missing_variable_names_it_and_the_server() -> None:
    with pytest.raises(ConfigError) as info:
        expand_env({"TOKEN": "Bearer ${GITHUB_TOKEN}"}, {}, where="projects.demo.servers.git")
    message = str(info.value)
    assert message.startswith("projects.demo.servers.git: env.TOKEN")
    assert "${GITHUB_TOKEN}" in message
    assert "not set" in message


def test_expand_env_without_where() -> None:
    with pytest.raises(ConfigError, match=r"^env\.A refers to \$\{NOPE\}"):
        expand_env({"A": "${NOPE}"}, {})


def test_expand_env_malformed_reference() -> None:
    with pytest.raises(ConfigError, match="malformed variable reference"):
        expand_env({"A": "${1X}"}, {"1X": "v"}, where="s")


# --- the shipped example ----------------------------------------------------


def test_example_toml_loads() -> None:
    path = default_config_path()
    assert path == Path(config.__file__).resolve().parent / "example.toml"
    cfg = load_config(path)
    assert cfg.gateway.host == "127.0.0.1"
    assert cfg.gateway.port == 8000
    assert cfg.gateway.state_dir == str(path.parent.parent / "state")

    demo = cfg.projects["demo"]
    assert demo.auth == "api-key"
    assert list(demo.servers) == ["demo", "everything"]
    server = demo.servers["demo"]
    assert (server.command, server.args) == ("python", ("-m", "upstream.demo_server"))
    assert server.restart == RestartPolicy()  # the table documents the defaults
    everything = demo.servers["everything"]
    assert everything.command == "mcp-server-everything"  # setup installs it; run-demo puts it on PATH
    assert everything.first_start_timeout_s == 300
    assert dict(everything.env) == {"LOG_LEVEL": "info"}


def test_remote_server_and_exclusive_command_or_url(tmp_path: Path) -> None:
    path = tmp_path / "remote.toml"
    path.write_text(
        '[projects.demo.servers.r]\nurl = "https://mcp.example.com/mcp"\n'
        'headers = { Authorization = "Bearer ${TOKEN}" }\n'
    )
    server = load_config(path).projects["demo"].servers["r"]
    assert server.url == "https://mcp.example.com/mcp" and server.command == ""
    assert server.transport == "streamable-http"
    assert dict(server.headers) == {"Authorization": "Bearer ${TOKEN}"}  # expanded at connect
    path.write_text('[projects.demo.servers.r]\nurl = "https://x/mcp"\ncommand = "npx"\n')
    with pytest.raises(ConfigError, match="not both"):
        load_config(path)


def _error_cases() -> list[Any]:
    """The cases of ``test_errors_name_file_field_and_expectation``, reused as they are."""
    (mark,) = test_errors_name_file_field_and_expectation.pytestmark  # type: ignore[attr-defined]
    return list(mark.args[1])


@pytest.mark.parametrize(("text", "field", "expectation"), _error_cases())
def test_errors_carry_source_field_and_expectation(
    tmp_path: Path, text: str, field: str, expectation: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    exc = info.value
    assert (exc.source, exc.field) == (str(path), field)
    assert exc.expectation is not None and expectation in exc.expectation
    # The text is made of the same parts (its first line when there are several problems).
    assert str(exc).splitlines()[0] == f"{path}: {field}: {exc.expectation}"


def test_several_errors_keep_the_first_in_the_attributes(tmp_path: Path) -> None:
    path = write(tmp_path, SERVER + 'command = "a"\nargs = "npx"\nrequest_timeout_s = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0] == f"{path}: {info.value.field}: {info.value.expectation}"
    assert info.value.field in ("projects.demo.servers.x.args",
                                "projects.demo.servers.x.request_timeout_s")


def test_errors_without_a_field(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.source, info.value.field) == (str(path), None)
    assert info.value.expectation is not None
    assert str(info.value) == f"{path}: {info.value.expectation}"
    path = write(tmp_path, "[gatway]\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field is None
    assert info.value.expectation == "unknown top-level field 'gatway' (expected gateway, projects)"


def test_mcp_servers_errors_name_the_entry_as_the_file_does() -> None:
    from config.importing import parse_mcp_servers, read_mcp_servers

    malformed = Path(__file__).resolve().parent.parent / "fixtures" / "mcpServers-malformed.json"
    with pytest.raises(ConfigError) as info:
        read_mcp_servers(malformed, "demo")
    exc = info.value
    assert (exc.source, exc.field) == (str(malformed), "mcpServers.broken.args")
    assert exc.expectation == "expected an array of strings, got '-y some-server'"
    assert str(exc) == f"{malformed}: mcpServers.broken.args: {exc.expectation}"
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"mcpServers": {"s": {"command": "x", "bogus": 1}}}, "demo", "body")
    assert (info.value.source, info.value.field) == ("body", "mcpServers.s.bogus")
    assert info.value.expectation is not None
    assert info.value.expectation.startswith("unknown field; expected one of: ")
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"servers": {}}, "demo", "body")
    assert (info.value.source, info.value.field) == ("body", None)
    assert str(info.value) == 'body: expected an object with an "mcpServers" object'


def test_a_ws_url_selects_the_websocket_transport(tmp_path: Path) -> None:
    path = tmp_path / "ws.toml"
    path.write_text(
        '[projects.demo.servers.a]\nurl = "wss://mcp.example.com/ws?x=1"\n'
        'headers = { Authorization = "Bearer ${TOKEN}" }\n'
        '[projects.demo.servers.b]\nurl = "ws://127.0.0.1:8765/"\ntransport = "websocket"\n'
    )
    servers = load_config(path).projects["demo"].servers
    assert servers["a"].transport == servers["b"].transport == "websocket"
    assert servers["a"].url == "wss://mcp.example.com/ws?x=1"
    assert dict(servers["a"].headers) == {"Authorization": "Bearer ${TOKEN}"}
    # What the store keeps names the transport, and reads back the same.
    spec = config.server_spec(servers["a"])
    assert spec["transport"] == "websocket"
    assert config.parse_server("demo", "a", spec, "store") == servers["a"]


@pytest.mark.parametrize("entry", [
    {"type": "ws", "url": "wss://mcp.example.com/ws"},
    {"type": "websocket", "url": "wss://mcp.example.com/ws"},
    {"transport": "websocket", "url": "wss://mcp.example.com/ws"},
    {"url": "wss://mcp.example.com/ws"},
])
def test_mcp_servers_websocket_entries(entry: dict[str, str]) -> None:
    from config.importing import parse_mcp_servers

    specs = parse_mcp_servers({"mcpServers": {"w": {**entry, "headers": {"X-K": "${K}"}}}},
                              "demo", "mcp.json")
    assert specs["w"]["transport"] == "websocket"
    assert specs["w"]["url"] == "wss://mcp.example.com/ws"
    assert specs["w"]["headers"] == {"X-K": "${K}"}


def test_mcp_servers_mismatched_type_names_the_type_field() -> None:
    from config.importing import parse_mcp_servers

    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"mcpServers": {"w": {"type": "sse", "url": "ws://h/ws"}}},
                          "demo", "mcp.json")
    assert str(info.value) == (
        "mcp.json: mcpServers.w.type: expected 'websocket' for a ws:// or wss:// url "
        "(or no transport), got 'sse'")
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"mcpServers": {"w": {"transport": "ws", "url": "https://h/mcp"}}},
                          "demo", "mcp.json")
    assert str(info.value).startswith("mcp.json: mcpServers.w.transport: expected "
                                      "'streamable-http' or 'sse' for an http:// or https:// url")
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"mcpServers": {"w": {"type": "socket", "url": "ws://h/"}}},
                          "demo", "mcp.json")
    assert str(info.value) == ("mcp.json: mcpServers.w.type: expected stdio, sse, http, "
                               "streamable-http, ws or websocket, got 'socket'")
