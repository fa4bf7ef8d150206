"""Errors of the config layer, in a module of their own so models and loading both use them
without importing each other."""

from __future__ import annotations


class ConfigError(Exception):
    """A config file (or a reference in it) is wrong; ``str()`` is the whole message."""
