"""A real `python main.py` process on a free port, and a browser that may talk to it only.

For the tests (and `docs/screenshot.py`) that need what a user runs: a shell walkthrough,
Swagger UI in Chromium, the server's own log lines.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
READY_LINE = "Uvicorn running on"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require(what: str, missing: list[str]) -> None:
    """Skip the test when something it needs is missing, saying how to get it; fail
    instead where `HYPERVISOR_TEST_REQUIRE_SERVICES` is set (CI), so it never goes unrun."""
    if not missing:
        return
    message = f"{what} needs: " + "; ".join(missing)
    if os.environ.get("HYPERVISOR_TEST_REQUIRE_SERVICES"):
        pytest.fail(message + " (HYPERVISOR_TEST_REQUIRE_SERVICES is set, so this fails)")
    pytest.skip(message)


def require_browser() -> None:
    """Playwright for Python and Debian's Chromium (Playwright's own download is unused)."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (.venv/bin/pip install -r requirements-dev.txt)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get update && apt-get install -y chromium)")
    require("the browser test", missing)


def require_commands(*names: str) -> None:
    missing = [
        f"{name} on PATH (apt-get install -y {name})" for name in names if not shutil.which(name)
    ]
    require("this test", missing)


class LiveServer:
    """`python main.py` in `workdir`, on a free port, on a SQLite file of its own.

    Its stderr is collected line by line in `lines`; start-up is over when uvicorn says it
    is listening (read from that stream, no polling)."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{
                key: value for key, value in os.environ.items() if not key.startswith("HYPERVISOR_")
            },
            "HYPERVISOR_PORT": str(self.port),
            "HYPERVISOR_DATABASE_URL": f"sqlite:///{workdir / 'hypervisor.db'}",
            "HYPERVISOR_SECRET_KEY": "live-server-test-secret-key-long-enough-for-hs256",
            "HYPERVISOR_BCRYPT_ROUNDS": "4",
            **env,
        }
        self.lines: list[str] = []
        self._arrived: queue.Queue[str | None] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> LiveServer:
        self._process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py")],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            while True:
                line = self._arrived.get(timeout=60)
                if line is None:
                    raise AssertionError("the server exited:\n" + "\n".join(self.lines))
                if READY_LINE in line:
                    return self
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _read(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self.lines.append(line.rstrip("\n"))
            self._arrived.put(line)
        self._arrived.put(None)

    def stop(self) -> int | None:
        """SIGTERM, then wait for the process and the end of its output; its exit status."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=30)
        return self._process.returncode


@contextmanager
def offline_page(blocked: list[str]) -> Iterator[Any]:
    """A Chromium page whose every request to a host other than 127.0.0.1/localhost is
    aborted and recorded in `blocked`: the machine might as well have no network."""
    from playwright.sync_api import Route, sync_playwright

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            # On the context, not one page: a popup or a worker is held to it as well.
            context.route("**/*", only_local)
            yield context.new_page()
        finally:
            browser.close()
