"""Retake docs/playground.png: the playground after one question, in front of the stub upstream.

    python -m tests.browser.screenshot [PATH]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.service import API_KEY, chromium, playground_service

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "playground.png"


def main(path: Path) -> None:
    with tempfile.TemporaryDirectory() as logs, playground_service(Path(logs)) as service, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(service.url + "/playground")
        expect(page.locator("body[data-ready=true]")).to_be_attached()
        page.fill("#api-key", API_KEY)
        page.fill("#question", "What is 17 + 25?")
        page.fill("#proposals", "3")
        page.click("#send")
        expect(page.locator("#usage-view")).to_be_visible(timeout=60_000)
        page.screenshot(path=path, full_page=True)
    print(path)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS_IMAGE)
