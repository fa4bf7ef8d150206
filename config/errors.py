"""Errors of the config layer, in a module of their own so models, loading and the store all
use them without importing each other.

Each error carries what a caller needs to react as attributes — a config
error its file, field and expectation; a store error its kind and HTTP
status — so no caller ever parses the message text.
"""

from __future__ import annotations

from typing import ClassVar


class ConfigError(Exception):
    """A config file (or a reference in it) is wrong; ``str()`` is the whole message.

    The message names the file, the field and what was expected; the same
    parts are attributes, each ``None`` when the error has none:

    - ``source``: where the text came from (a file path, ``"body"`` for the
      admin API, ``"command line"``);
    - ``field``: the dotted path of the wrong value, such as
      ``projects.demo.servers.git.restart.max_restarts`` or
      ``mcpServers.broken.args``;
    - ``expectation``: what is wrong or was expected, without source and
      field (``"expected int, got 'x'"``).

    When one value has several problems the message lists them all, one a
    line, and the attributes describe the first.
    """

    def __init__(
        self, message: str, *, source: str | None = None, field: str | None = None,
        expectation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.field = field
        self.expectation = expectation

    @classmethod
    def at(cls, source: str, field: str | None, expectation: str) -> ConfigError:
        """The error ``"<source>: <field>: <expectation>"`` (``"<source>: <expectation>"``
        without a field), with its parts as attributes."""
        message = f"{source}: {field}: {expectation}" if field else f"{source}: {expectation}"
        return cls(message, source=source, field=field, expectation=expectation)


class StoreError(Exception):
    """The store cannot do what was asked; ``str()`` says why.

    The base of the store's errors: a caller tells them apart by type, or by
    the ``kind`` and ``status`` (the HTTP status the admin API answers with)
    each subclass carries — never by the message.
    """

    kind: ClassVar[str] = "store"
    status: ClassVar[int] = 500


class NotFoundError(StoreError):
    """The project, server or key named does not exist."""

    kind = "not_found"
    status = 404


class AlreadyExistsError(StoreError):
    """A project or server of that name exists already (and the write was a create)."""

    kind = "already_exists"
    status = 409


class SchemaVersionError(StoreError):
    """The database file was written by a newer mcp-orch; it is neither read nor written."""

    kind = "schema_version"
    status = 500


class StoreUnavailableError(StoreError):
    """The store's database cannot be reached (PostgreSQL down, restarting, or the
    connection broke): nothing was read or written. The next call tries again."""

    kind = "unavailable"
    status = 503
