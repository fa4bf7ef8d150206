"""A real PostgreSQL for the tests: Debian's server binaries, in a temporary directory.

``postgres_server`` (session-scoped) runs ``initdb`` and ``pg_ctl start`` from
``/usr/lib/postgresql/*/bin`` in a fresh temporary directory, as an
unprivileged user when the tests run as root (PostgreSQL refuses to run as
root): ``nobody``, or a system user ``mcporch-pg`` made for it. It listens on
127.0.0.1 on a free port (its unix socket in the same directory), trusts
local connections, and is stopped and removed at the end of the session.
``pg_dsn`` gives each test a database of its own (``CREATE DATABASE``),
dropped afterwards; ``store_target`` parametrizes a test over both backends.

Without the binaries the PostgreSQL tests are skipped, naming what is
missing — except in CI (``CI=true``), where they fail: ``scripts/setup.sh``
installs the package there.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from config import Store

SUPERUSER = "postgres"


def server_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` holding the server (initdb, pg_ctl, postgres)."""
    found = []
    for bindir in glob.glob("/usr/lib/postgresql/*/bin"):
        names = ("initdb", "pg_ctl", "postgres")
        if all(os.access(os.path.join(bindir, n), os.X_OK) for n in names):
            version = os.path.basename(os.path.dirname(bindir))
            found.append((int(version) if version.isdigit() else 0, bindir))
    return Path(max(found)[1]) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_user() -> str | None:
    """Who runs the server: ``None`` (this user) unless root; then ``nobody``, or a
    system user made for it."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", "mcporch-pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "mcporch-pg"], check=True, capture_output=True)
    return "mcporch-pg"


@attrs.define(eq=False)
class PostgresServer:
    """One running PostgreSQL cluster; :meth:`stop` and :meth:`start` for outage tests."""

    bindir: Path
    directory: Path
    port: int
    user: str | None
    running: bool = False

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def logfile(self) -> Path:
        return self.directory / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                cwd=self.directory)
        if result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stdout}"
                               f"{result.stderr}\n{log[-2000:]}")
        return result

    def init(self) -> None:
        self._run("initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")

    def start(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200 -c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-o", options,
                  "-w", "-t", "60", "start")
        self.running = True

    def stop(self) -> None:
        """Stop the server (fast: open sessions are ended, as in a restart)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60", "stop")
            self.running = False

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def create_database(self) -> str:
        """A new empty database; its DSN."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        import psycopg

        name = dsn.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster for as long as the context lasts (then removed)."""
    bindir = server_bindir()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    user = _server_user()
    directory = Path(tempfile.mkdtemp(prefix="mcp-orch-pg-"))
    try:
        if user is not None:
            shutil.chown(directory, user)
        server = PostgresServer(bindir, directory, _free_port(), user)
        server.init()
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(Exception):
                server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL (skipped without the binaries, except in CI)."""
    if server_bindir() is None:
        reason = ("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); "
                  "scripts/setup.sh installs Debian's postgresql")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("psycopg is not installed (make setup)")
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database on the session's server, for this test only."""
    postgres_server.ensure_running()  # a test that stopped it and failed
    dsn = postgres_server.create_database()
    yield dsn
    postgres_server.ensure_running()
    postgres_server.drop_database(dsn)


@attrs.frozen
class StoreTarget:
    """Where a test's store lives: SQLite in ``state_dir``, or the PostgreSQL ``dsn``."""

    backend: str
    state_dir: Path
    dsn: str | None = None

    def open(self) -> Store:
        return Store.open(self.state_dir, self.dsn)

    def settings(self) -> dict[str, Any]:
        """``[gateway]`` settings naming this store (for ``write_config``)."""
        return {} if self.dsn is None else {"store": self.dsn}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    """Each test twice: on SQLite, and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return StoreTarget("sqlite", tmp_path / "state")
    dsn = request.getfixturevalue("pg_dsn")
    return StoreTarget("postgresql", tmp_path / "state", dsn)
