"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real
``troth serve`` process with token authentication on.

The browser is the system's ``chromium`` (``apt-get install chromium``; the Makefile's
``test`` target installs it when missing) — never a browser downloaded by Playwright. A
screenshot of each step is saved under ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.server_process import ServerProcess, running_server
from troth.client import Client
from troth.model import MAX_TIMEOUT

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "dashboard-test-token"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("TROTH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "Debian's chromium is needed for the dashboard test: apt-get install -y chromium "
            "(make test installs it)"
        )
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("ui") / "ui.db"
    args = ("--auth", "token", "--auth-token", TOKEN)
    with running_server(f"sqlite:///{path}", extra_args=args) as srv:
        with Client(srv.url, token=TOKEN) as c:
            c.create_promise(
                "orders/1",
                MAX_TIMEOUT,
                param=json.dumps({"amount": 42}).encode(),
                tags={"team": "billing"},
                idempotency_key="create-orders-1",
            )
            for child in ("orders/1.1", "orders/1.2", "orders/1.1.1"):
                c.create_promise(child, MAX_TIMEOUT, tags={"team": "billing"})
            c.create_promise("orders/2", MAX_TIMEOUT, tags={"team": "shipping"})
            c.create_promise("other/1", MAX_TIMEOUT, tags={"team": "billing"})
            c.create_promise("jobs/1", MAX_TIMEOUT, tags={"resonate:invoke": "poll://any@workers"})
            c.create_schedule("nightly", "0 3 * * *", "nightly/{{.timestamp}}", 60_000)
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    try:
        yield p
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def sign_in(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/ui")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-basic-row")).to_be_hidden()  # the server asks for a token
    page.fill("#login-token", TOKEN)
    page.click("#login-submit")
    expect(page.locator("#login")).to_be_hidden()


def test_search_open_resolve(server: ServerProcess, page: Page) -> None:
    sign_in(page, server)
    rows = page.locator("#promise-rows tr")
    expect(rows.first).to_be_visible()

    # search: id pattern, state and tags
    page.fill("#search-id", "orders/*")
    page.select_option("#search-state", "pending")
    page.fill("#search-tags", "team=billing")
    page.click("#search-submit")
    expect(rows).to_have_count(4)  # orders/1, 1.1, 1.2, 1.1.1 (not orders/2, not other/1)
    ids = sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.id)"))
    assert ids == ["orders/1", "orders/1.1", "orders/1.1.1", "orders/1.2"]
    shot(page, "search")

    # paging: two per page, newest first, cursors from the server
    page.select_option("#page-size", "2")
    expect(rows).to_have_count(2)
    expect(page.locator("#first-page")).to_be_disabled()
    first = rows.evaluate_all("rs => rs.map(r => r.dataset.id)")
    page.click("#next-page")
    expect(page.locator("#promise-count")).to_have_text("page 2: 2 promise(s)")
    second = rows.evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert sorted(first + second) == ids
    page.click("#first-page")
    expect(page.locator("#promise-count")).to_have_text("page 1: 2 promise(s)")
    page.select_option("#page-size", "25")
    expect(rows).to_have_count(4)

    # open a promise: decoded param, keys, tags, call tree
    page.locator('#promise-rows a:text-is("orders/1")').click()
    expect(page.locator("#detail-state")).to_have_text("PENDING")
    expect(page.locator("#detail-param")).to_contain_text('"amount": 42')
    expect(page.locator("#detail-fields")).to_contain_text("create-orders-1")
    expect(page.locator("#detail-tags")).to_contain_text("billing")
    tree = page.locator("#detail-tree li.tree-node")
    expect(tree).to_have_count(4)
    nested = page.locator('#detail-tree li[data-id="orders/1.1"] li[data-id="orders/1.1.1"]')
    expect(nested).to_have_count(1)

    # resolve it from the browser
    page.fill("#complete-value", '{"approved": true}')
    page.click("#resolve")
    expect(page.locator("#detail-state")).to_have_text("RESOLVED")
    expect(page.locator("#detail-value")).to_contain_text('"approved": true')
    expect(page.locator("#resolve")).to_be_disabled()
    shot(page, "resolved")

    with Client(server.url, token=TOKEN) as c:
        stored = c.get_promise("orders/1")
    assert stored.state.value == "RESOLVED"
    assert json.loads(stored.value.data or b"") == {"approved": True}

    # live refresh: a completion made elsewhere shows up without reloading the page
    page.locator('#detail-tree a:text-is("orders/1.2")').click()
    expect(page.locator("#detail-state")).to_have_text("PENDING")
    with Client(server.url, token=TOKEN) as c:
        c.reject_promise("orders/1.2", value=b"declined")
    expect(page.locator("#detail-state")).to_have_text("REJECTED", timeout=20_000)
    expect(page.locator("#detail-value")).to_have_text("declined")


def test_tasks_and_schedules(server: ServerProcess, page: Page) -> None:
    sign_in(page, server)
    page.click("#nav-tasks")
    task = page.locator("#task-rows tr.task-row")
    expect(task).to_have_count(1)
    expect(task).to_contain_text("__invoke:jobs/1")
    expect(task).to_contain_text("INIT")
    page.click("#nav-schedules")
    schedule = page.locator("#schedule-rows tr.schedule-row")
    expect(schedule).to_have_count(1)
    expect(schedule).to_contain_text("0 3 * * *")
    expect(schedule).to_contain_text("nightly/{{.timestamp}}")
    expect(schedule).to_contain_text(" (in ")  # next run time, relative
    shot(page, "schedules")


def test_wrong_token_is_refused(server: ServerProcess, page: Page) -> None:
    page.goto(f"{server.url}/ui")
    page.fill("#login-token", "not-the-token")
    page.click("#login-submit")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-why")).to_have_text("invalid bearer token")
    expect(page.locator("#promise-rows tr")).to_have_count(0)


def test_basic_auth_sign_in(tmp_path: Path, page: Page) -> None:
    args = ("--auth", "basic", "--auth-user", "ops:pa55:word")
    with running_server(f"sqlite:///{tmp_path}/basic.db", extra_args=args) as srv:
        with Client(srv.url, user="ops:pa55:word") as c:
            c.create_promise("approvals/7", MAX_TIMEOUT, param=b"ship it?")
        page.goto(f"{srv.url}/ui#/promise/approvals%2F7")
        expect(page.locator("#login-token-row")).to_be_hidden()  # the server asks for basic
        page.fill("#login-user", "ops")
        page.fill("#login-password", "pa55:word")
        page.click("#login-submit")
        expect(page.locator("#detail-param")).to_have_text("ship it?")
        page.click("#cancel")
        expect(page.locator("#detail-state")).to_have_text("REJECTED_CANCELED")
        with Client(srv.url, user="ops:pa55:word") as c:
            assert c.get_promise("approvals/7").state.value == "REJECTED_CANCELED"
