"""The playground in a real browser: headless Chromium loads the page from the running service
(in front of the stub upstream), asks a question and watches drafts and answer arrive."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Page, expect

from scripts.launch import stop
from tests.browser.service import (
    API_KEY,
    DEFAULT_PROPOSALS,
    DEFAULT_ROUNDS,
    Service,
    chromium,
    chromium_path,
    playground_service,
)

pytestmark = pytest.mark.integration

# The service and the browser share two cores with the rest of the suite: be patient.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium on PATH: .ci/run installs it")
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with playground_service(tmp_path_factory.mktemp("playground")) as service:
        yield service


@contextlib.contextmanager
def open_page(browser: Browser, service: Service) -> Iterator[Page]:
    """The playground in a fresh browser context (its own localStorage), once its form is ready;
    the page's script must throw nothing it does not catch."""
    context = browser.new_context()
    uncaught: list[Error] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: uncaught.append(error))  # playwright wants a Python function
        page.goto(service.url + "/playground")
        expect(page.locator("body[data-ready=true]")).to_be_attached()
        yield page
    finally:
        context.close()
    assert not uncaught, f"the page threw: {uncaught}"


@pytest.fixture
def page(browser: Browser, service: Service) -> Iterator[Page]:
    with open_page(browser, service) as page:
        yield page


def ask(page: Page, *, key: str, proposals: int, rounds: int) -> None:
    page.fill("#api-key", key)
    page.fill("#question", "What is 17 + 25?")
    page.fill("#proposals", str(proposals))
    page.fill("#rounds", str(rounds))
    page.click("#send")


def test_the_form_starts_from_the_server_defaults(page: Page) -> None:
    expect(page.locator("#proposals")).to_have_value(str(DEFAULT_PROPOSALS))
    expect(page.locator("#rounds")).to_have_value(str(DEFAULT_ROUNDS))
    expect(page.locator("#key-hint")).to_be_visible()


def test_three_drafts_then_the_answer_and_its_usage(page: Page, tmp_path: Path) -> None:
    ask(page, key=API_KEY, proposals=3, rounds=1)
    drafts = page.locator(".round[data-round='0'] .draft")
    expect(drafts).to_have_count(3)
    expect(page.locator(".round")).to_have_count(1)
    expect(page.locator(".round .draft.pending")).to_have_count(0)
    # The page asks for aft.reasoning: the first draft streams live, and the stub streams
    # timestamps (" t<µs>") where its non-streamed drafts are words.
    expect(drafts.nth(0).locator(".text")).to_contain_text(re.compile(r"^ t\d+ t\d+"))
    for i in (1, 2):
        expect(drafts.nth(i).locator(".text")).to_contain_text("draft")  # the stub's words
    expect(page.locator("#answer")).not_to_be_empty()
    # One row per round (proposals, answer), then the total.
    expect(page.locator("#usage tbody tr")).to_have_count(3)
    expect(page.locator("#status")).to_contain_text("done")
    expect(page.locator("#error")).to_be_hidden()
    page.screenshot(path=tmp_path / "playground.png", full_page=True)


def test_issue_22_an_answer_that_exited_early_says_so(browser: Browser, tmp_path: Path) -> None:
    # The stub's non-streamed drafts are one text: with early exit on, round 1's three drafts agree
    # (round 0's first draft streams timestamps, so round 0 does not), and the answer is their draft.
    with playground_service(tmp_path, service_flags=("--early-exit", "all")) as service, \
            open_page(browser, service) as page:
        ask(page, key=API_KEY, proposals=3, rounds=3)
        expect(page.locator("#early-exit")).to_contain_text("the drafts of round 1 agreed")
        expect(page.locator(".round[data-round='2']")).to_have_class(re.compile("skipped"))
        expect(page.locator(".round[data-round='2'] .draft .text").first).to_have_text("not run")
        expect(page.locator("#answer")).to_contain_text("draft")
        expect(page.locator("#status")).to_contain_text("done")
        expect(page.locator("#usage tbody tr")).to_have_count(3)  # rounds 0 and 1, then the total
        ask(page, key=API_KEY, proposals=3, rounds=1)  # the next answer runs in full: no note
        expect(page.locator("#status")).to_contain_text("done")
        expect(page.locator("#early-exit")).to_be_hidden()


def test_the_key_is_kept_in_the_browser(page: Page) -> None:
    page.fill("#api-key", API_KEY)
    page.reload()
    expect(page.locator("#api-key")).to_have_value(API_KEY)


def test_a_wrong_key_shows_the_api_error(page: Page) -> None:
    ask(page, key="wrong-key", proposals=3, rounds=1)
    expect(page.locator("#error")).to_have_text("401 authentication_error: invalid API key")
    expect(page.locator(".round .draft.pending")).to_have_count(3)


def test_an_error_event_mid_stream_is_shown(browser: Browser, tmp_path: Path) -> None:
    # The stub cuts every second chat response halfway: the drafts (the first) arrive, the streamed
    # answer (the second) breaks off after its first tokens, and the service sends an error event.
    with playground_service(tmp_path, "--cut-every", "2") as service, open_page(browser, service) as page:
        ask(page, key=API_KEY, proposals=3, rounds=1)
        expect(page.locator("#error")).to_have_text("server_error: the upstream model server failed")
        expect(page.locator("#status")).to_have_text("failed")


def test_an_upstream_that_cannot_be_reached_is_shown(browser: Browser, tmp_path: Path) -> None:
    with playground_service(tmp_path) as service:
        stop(service.upstream)  # the service stays up; its upstream calls now fail
        with open_page(browser, service) as page:
            ask(page, key=API_KEY, proposals=3, rounds=1)
            expect(page.locator("#error")).to_have_text(
                "502 server_error: the upstream model server could not be reached")
            expect(page.locator("#status")).to_have_text("failed")
