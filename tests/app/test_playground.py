"""GET /playground: the page, its script and style come from the service itself, open to all."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
from fastapi import FastAPI

from app.routes.playground import ASSETS

PAGE = "http://aft.test/playground"


class _Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.targets += [value for name, value in attrs if name in ("src", "href") and value]


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://aft.test")


async def test_the_page_and_every_asset_it_names_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/playground")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    links = _Links()
    links.feed(page.text)
    assert links.targets, "the page names its script and style"
    types = {}
    for target in links.targets:
        url = urljoin(PAGE, target)
        assert urlsplit(url).netloc == "aft.test", f"{target} is fetched from elsewhere"
        asset = await client.get(url)
        assert asset.status_code == 200, target
        types[target.rsplit(".", 1)[-1]] = asset.headers["content-type"]
    assert types["js"].startswith("text/javascript")
    assert types["css"].startswith("text/css")


async def test_every_asset_is_served_with_its_type(client: httpx.AsyncClient) -> None:
    # Including those the page does not name itself (the modules its script imports).
    for name, media_type in ASSETS.items():
        asset = await client.get(f"/playground/assets/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].split(";")[0] == media_type
        assert asset.text.strip(), name


async def test_the_page_is_open_when_the_api_needs_a_key(app_factory: Callable[..., FastAPI]) -> None:
    async with _client(app_factory(api_keys=["secret"])) as c:
        for path in ("/playground", "/playground/assets/playground.js", "/playground/config"):
            assert (await c.get(path)).status_code == 200, path
        assert (await c.get("/v1/models")).status_code == 401


async def test_config_holds_the_server_defaults(app_factory: Callable[..., FastAPI]) -> None:
    async with _client(app_factory(default_proposals=3, default_rounds=1, max_rounds=3)) as c:
        config = (await c.get("/playground/config")).json()
    assert config == {"proposals": 3, "rounds": 1, "max_proposals": 16, "max_rounds": 3, "api_key_required": False}


async def test_config_says_when_a_key_is_needed(app_factory: Callable[..., FastAPI]) -> None:
    async with _client(app_factory(api_keys=["secret"])) as c:
        assert (await c.get("/playground/config")).json()["api_key_required"] is True


async def test_only_the_playground_files_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/playground/assets/playground.html", "/playground/assets/..%2F..%2Fmain.py",
                 "/playground/assets/nothing.js"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found_error"
