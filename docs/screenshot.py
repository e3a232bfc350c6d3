"""Render /docs of a fresh server in Chromium with every request off the machine blocked, and
save what a newcomer sees to docs/swagger-ui.png.

    .venv/bin/python docs/screenshot.py [OUTPUT.png]

Needs what the browser test needs: playwright (requirements-dev.txt) and /usr/bin/chromium.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer, offline_page  # noqa: E402

logger = logging.getLogger("screenshot")


def main(output: Path) -> int:
    with tempfile.TemporaryDirectory() as workdir, LiveServer(Path(workdir)) as server:
        blocked: list[str] = []
        with offline_page(blocked) as page:
            page.set_viewport_size({"width": 1280, "height": 1500})
            page.goto(f"{server.url}/docs")
            page.locator(".opblock-summary-path", has_text="/deployment/create").wait_for()
            page.screenshot(path=str(output))
    if blocked:
        logger.error("requests off the machine were attempted: %s", blocked)
        return 1
    logger.info("saved %s (no request left the machine)", output)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "swagger-ui.png"
    sys.exit(main(target))
