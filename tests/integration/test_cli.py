"""The ``mcp-orch`` command line as an operator runs it: real processes, real files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import REPO, demo_projects, write_config
from tests.support.postgres import StoreTarget


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )


def test_malformed_config_fails_serve_naming_file_field_and_expectation(tmp_path: Path) -> None:
    path = write_config(tmp_path, demo_projects(restart={"max_restarts": "five"}))
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2
    err = result.stderr
    assert str(path) in err
    assert "projects.demo.servers.demo.restart.max_restarts" in err
    assert "int" in err
    assert "Traceback" not in err


def test_unknown_field_and_string_for_list(tmp_path: Path) -> None:
    path = write_config(tmp_path, demo_projects(comand="x"))
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2 and "comand" in result.stderr
    path = write_config(tmp_path, {"demo": {"servers": {"demo": {"command": "npx", "args": "-y"}}}})
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2 and "projects.demo.servers.demo.args" in result.stderr


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[gateway\nport = 1\n")
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2 and str(path) in result.stderr
    result = run_cli("serve", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2 and "absent.toml" in result.stderr


def test_keys_create_prints_key_last_and_serve_accepts_it(
    tmp_path: Path, store_target: StoreTarget,
) -> None:
    path = write_config(tmp_path, demo_projects(), **store_target.settings())
    created = run_cli("keys", "create", "--project", "demo", "--config", str(path))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("mcpo_") and len(key) >= 40
    missing = run_cli("keys", "create", "--project", "nope", "--config", str(path))
    assert missing.returncode == 2 and "nope" in missing.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", "0"],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "listening on" in line:
                url = line.rsplit(" ", 1)[1].strip()
                break
        assert url, "gateway did not report its address"
        r = httpx.get(url + "/projects/demo/servers/demo/sse", headers={"Authorization": "Bearer bad"})
        assert r.status_code == 401
        with httpx.stream("GET", url + "/projects/demo/servers/demo/sse",
                          headers={"Authorization": f"Bearer {key}"}, timeout=10) as r:
            assert r.status_code == 200
            assert next(r.iter_lines()) == "event: endpoint"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_store_setting_is_checked_naming_file_and_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, demo_projects(), store="mysql://db/x")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}: gateway.store: expected a postgresql:// URL" in result.stderr
    path = write_config(tmp_path, demo_projects(), store="${MCP_ORCH_TEST_UNSET_DSN}")
    result = run_cli("keys", "list", "--config", str(path))
    assert result.returncode == 2
    assert "gateway.store: refers to ${MCP_ORCH_TEST_UNSET_DSN}, which is not set" in result.stderr


def test_cli_on_an_unreachable_postgres_exits_nonzero_naming_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = write_config(tmp_path, demo_projects(),
                        store=f"postgresql://postgres:secret@127.0.0.1:{port}/db")
    result = run_cli("keys", "list", "--config", str(path))
    assert result.returncode == 1
    assert f"the PostgreSQL store postgresql://postgres@127.0.0.1:{port}/db is unreachable" \
        in result.stderr
    assert "secret" not in result.stderr
