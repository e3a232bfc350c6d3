"""Render pages of fresh servers in Chromium with every request off the machine blocked, and
save what a newcomer sees: /docs to docs/swagger-ui.png, and the dashboard of a seeded
server (`tests/ui_world.py`) to docs/ui-home.png, docs/ui-cluster.png (laptop width),
docs/ui-cluster-narrow.png (phone width) and docs/ui-deployment.png.

    .venv/bin/python docs/screenshot.py            # every picture, into docs/
    .venv/bin/python docs/screenshot.py OUTPUT.png # only /docs, to OUTPUT.png
    .venv/bin/python docs/screenshot.py --dashboard # only the dashboard's

Needs what the browser tests need: playwright (requirements-dev.txt) and /usr/bin/chromium.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer, offline_page  # noqa: E402
from ui_world import log_in, seed_acme  # noqa: E402

logger = logging.getLogger("screenshot")

LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def swagger(output: Path) -> list[str]:
    """/docs of a fresh server; the requests off the machine that were attempted."""
    blocked: list[str] = []
    with tempfile.TemporaryDirectory() as workdir, LiveServer(Path(workdir)) as server:
        with offline_page(blocked) as page:
            page.set_viewport_size({"width": 1280, "height": 1500})
            page.goto(f"{server.url}/docs")
            page.locator(".opblock-summary-path", has_text="/deployment/create").wait_for()
            page.screenshot(path=str(output))
    return blocked


def dashboard(folder: Path) -> list[str]:
    """The dashboard of a seeded server, as alice (an admin) sees it."""
    blocked: list[str] = []
    with tempfile.TemporaryDirectory() as workdir, LiveServer(Path(workdir)) as server:
        world = seed_acme(server.url)
        cluster = "/ui/orgs/acme-ml/clusters/gpu-a"
        with offline_page(blocked) as page:
            log_in(page, server.url, "alice")
            _wait_settled(page)
            page.screenshot(path=str(folder / "ui-home.png"), full_page=True)
            page.goto(f"{server.url}{cluster}")
            page.locator("#live-status[data-state=live]").wait_for()
            page.screenshot(path=str(folder / "ui-cluster.png"), full_page=True)
            page.set_viewport_size(PHONE)
            page.reload()
            page.locator("#live-status[data-state=live]").wait_for()
            page.screenshot(path=str(folder / "ui-cluster-narrow.png"), full_page=True)
            page.set_viewport_size(LAPTOP)
            page.goto(f"{server.url}/ui/deployments/{world['ids']['train']}")
            page.screenshot(path=str(folder / "ui-deployment.png"), full_page=True)
    return blocked


def _wait_settled(page: Any) -> None:
    page.wait_for_load_state("networkidle")


def main(arguments: list[str]) -> int:
    if arguments == ["--dashboard"]:
        blocked = dashboard(ROOT / "docs")
    elif arguments:
        blocked = swagger(Path(arguments[0]))
    else:
        blocked = swagger(ROOT / "docs" / "swagger-ui.png") + dashboard(ROOT / "docs")
    if blocked:
        logger.error("requests off the machine were attempted: %s", blocked)
        return 1
    logger.info("saved the screenshots (no request left the machine)")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(sys.argv[1:]))
