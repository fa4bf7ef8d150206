"""Real-browser tests: Playwright's *sync* API driving Debian's chromium.

Playwright is asyncio-only inside, so it never runs on the test's trio loop:
each scenario is one plain function run in a worker thread
(``trio.to_thread.run_sync``) against the gateway the test's trio loop serves.
``playwright install`` cannot download a browser here, so the system's
``/usr/bin/chromium`` (``apt-get install chromium``, done by scripts/setup.sh)
is launched; without it these tests are skipped.

Screenshots go to ``tests/artifacts/<test name>/`` (gitignored); each test
prints where.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("MCP_ORCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

pytestmark = pytest.mark.browser


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (scripts/setup.sh installs Debian's chromium)"
    return None


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """A directory for this test's screenshots (printed, kept after the run)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    directory = ARTIFACTS / name
    directory.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {directory}")
    return directory


@pytest.fixture
def browser_page() -> Callable[[], Any]:
    """A context manager factory: ``with browser_page()() as page`` in the worker thread."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)

    @contextmanager
    def open_page() -> Iterator[Any]:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                         headless=True)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.set_default_timeout(15_000)
                yield page
            finally:
                browser.close()

    return open_page
