"""Locating the third-party peers installed by scripts/setup.sh (npm, Node 22)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support import REPO

NODE_MODULES = REPO / "tests" / "interop" / "node_modules"
NODE22_DIRS = [REPO / ".tools" / "node22" / "node_modules" / "node" / "bin",
               REPO / ".tools" / "node22" / "node_modules" / ".bin"]


def node_env() -> dict[str, str]:
    """The environment with Node ≥ 22 and the peers' bin directory first on PATH."""
    env = dict(os.environ)
    extra = [str(d) for d in NODE22_DIRS if d.is_dir()] + [str(NODE_MODULES / ".bin")]
    env["PATH"] = os.pathsep.join([*extra, env.get("PATH", "")])
    return env


def peer(name: str) -> Path:
    """The path of an npm peer's executable; fails under CI, skips elsewhere, when missing."""
    path = NODE_MODULES / ".bin" / name
    if not path.exists():
        message = f"{path} is not installed: run scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def node_major() -> int:
    node = shutil.which("node", path=node_env()["PATH"])
    if node is None:
        return 0
    import subprocess

    out = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    return int(out.strip().lstrip("v").split(".")[0] or 0)
