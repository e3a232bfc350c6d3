"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real
server process, every request off the machine blocked: a person logs in, watches a cluster
page fill up while deployments are created through the API (no reload), cancels from the
page; a viewer sees no controls; another tenant's URL is a 404; a forged form changes
nothing; a phone-sized screen needs no sideways scrolling."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from live_server import CHROMIUM, CHROMIUM_ARGS, LOCAL_HOSTS, LiveServer, require_browser
from ui_world import Person, log_in

_names = itertools.count(1)


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module; each test makes people and organizations of its own."""
    require_browser()
    with LiveServer(tmp_path_factory.mktemp("dashboard")) as live:
        yield live


@pytest.fixture(scope="module")
def chromium(server: LiveServer) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Browsers:
    """Browser windows of their own (separate cookies) for the people of one test, each
    aborting every request to a host other than this machine, and recording it."""

    def __init__(self, chromium: Any) -> None:
        self.chromium = chromium
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.contexts: list[Any] = []

    def open(self, width: int = 1280, height: int = 900) -> Any:
        context = self.chromium.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(15_000)
        context.route("**/*", self._only_local)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        return page

    def _only_local(self, route: Any) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("internetdisconnected")

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsers(chromium: Any) -> Iterator[Browsers]:
    opened = Browsers(chromium)
    yield opened
    opened.close()
    assert opened.blocked == []
    assert opened.errors == []


class World:
    """An admin's organization with an 8-GPU cluster on the live server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = Person.register(url, fresh("admin"))
        self.org = fresh("org")
        self.cluster = "gpu-a"
        self.admin.create_org(self.org)
        self.admin.create_cluster(self.org, self.cluster, cpu=32, ram=256, gpu=8)
        self.path = f"/ui/orgs/{self.org}/clusters/{self.cluster}"

    def member(self, role: str) -> Person:
        newcomer = Person.register(self.url, fresh(role))
        newcomer.join(self.admin.invite(self.org, role))
        return newcomer

    def deploy(self, **fields: Any) -> dict[str, Any]:
        return self.admin.deploy(self.org, self.cluster, **fields)

    def count(self) -> int:
        listed = self.admin.call(
            "GET", f"/deployment/list/{self.cluster}", params={"organization_name": self.org}
        )
        return len(listed["deployments"])


@pytest.fixture
def world(server: LiveServer) -> World:
    return World(server.url)


def test_a_cluster_page_fills_up_live_as_deployments_are_created_through_the_api(
    server: LiveServer, world: World, browsers: Browsers
) -> None:
    page = browsers.open()
    log_in(page, server.url, world.admin.username, then=world.path)
    page.locator("#live-status[data-state=live]").wait_for()
    assert page.locator("tr.queue-entry").count() == 0
    page.evaluate("window.sameDocument = true")  # gone if the page were reloaded

    first = world.deploy(name="train", required_gpu=8, duration_seconds=3600)
    page.locator(f"tr.running-entry[data-deployment-id='{first['id']}']").wait_for()
    waiting = [world.deploy(name=f"eval-{i}", required_gpu=2) for i in range(3)]
    last = page.locator(f"tr.queue-entry[data-deployment-id='{waiting[-1]['id']}']")
    last.wait_for()

    assert page.evaluate("window.sameDocument") is True
    assert page.locator("tr.queue-entry").count() == 3
    assert page.locator("#queue-total").inner_text() == "3"
    assert page.locator("tr.queue-entry .position").all_inner_texts() == ["1", "2", "3"]
    assert "needs 2 gpu, 0 available" in last.locator(".reason").inner_text()
    assert page.locator("#timeline .run-running").count() == 1
    assert page.get_attribute("svg.bar >> nth=2", "aria-label") == (
        "gpu: 8 running, 0 reserved, 0 free of 8"
    )


def test_cancelling_from_the_deployment_page(
    server: LiveServer, world: World, browsers: Browsers
) -> None:
    deployment = world.deploy(name="to-cancel", required_gpu=1)
    page = browsers.open()
    log_in(page, server.url, world.admin.username, then=f"/ui/deployments/{deployment['id']}")
    assert page.locator("#status").inner_text() == "running"

    page.locator("#cancel").click()
    page.locator("#status", has_text="cancelled").wait_for()

    assert world.admin.get(deployment["id"])["status"] == "cancelled"
    assert page.locator("#cancel").count() == 0
    assert page.locator("tr.event-cancelled").count() == 1


def test_a_viewer_sees_the_cluster_but_no_controls(
    server: LiveServer, world: World, browsers: Browsers
) -> None:
    viewer = world.member("viewer")
    deployment = world.deploy(name="watched", required_gpu=1)
    page = browsers.open()

    log_in(page, server.url, viewer.username, then=world.path)
    on_cluster = {
        "rows": page.locator(f"tr.running-entry[data-deployment-id='{deployment['id']}']").count(),
        "forms": page.locator("form.deploy-form").count(),
        "buttons": page.locator("main button").count(),
    }
    page.goto(f"{server.url}/ui/deployments/{deployment['id']}")
    cancel_buttons = page.locator("#cancel").count()

    assert on_cluster == {"rows": 1, "forms": 0, "buttons": 0}
    assert cancel_buttons == 0


def test_another_tenants_urls_answer_404(
    server: LiveServer, world: World, browsers: Browsers
) -> None:
    deployment = world.deploy(name="private", required_gpu=1)
    outsider = World(server.url)
    page = browsers.open()
    log_in(page, server.url, outsider.admin.username)

    answers = {
        path: page.goto(f"{server.url}{path}")
        for path in (world.path, f"/ui/deployments/{deployment['id']}", f"/ui/orgs/{world.org}")
    }

    for path, answer in answers.items():
        assert answer is not None and answer.status == 404, path
    assert page.locator("h1").inner_text() == "Not found"
    assert "private" not in page.content()


def test_a_forged_form_post_changes_nothing(
    server: LiveServer, world: World, browsers: Browsers
) -> None:
    page = browsers.open()
    log_in(page, server.url, world.admin.username, then=world.path)
    before = world.count()

    # The page's own form with its token replaced: refused with 403.
    page.locator("input[name=docker_image]").fill("ghcr.io/acme/train:1.0")
    page.evaluate(
        "document.querySelector('form.deploy-form input[name=csrf_token]').value = 'forged'"
    )
    with page.expect_navigation():
        page.locator("button[value=create]").click()
    refused = page.locator("p.error").inner_text()

    # Another site's page posting to the dashboard: the browser sends no session cookie.
    evil = f"http://localhost:{server.port}/evil.html"
    page.route(
        evil,
        lambda route: route.fulfill(
            content_type="text/html",
            body=f"""<form method="post" action="{server.url}{world.path}/deployments">
            <input name="docker_image" value="evil:1"><input name="cpu" value="1">
            <input name="action" value="create"></form>
            <script>document.forms[0].submit()</script>""",
        ),
    )
    page.goto(evil)
    page.wait_for_url(f"{server.url}/ui/login**")

    assert "CSRF" in refused
    assert world.count() == before


def test_a_phone_sized_screen_needs_no_sideways_scrolling(
    server: LiveServer, world: World, browsers: Browsers, tmp_path: Path
) -> None:
    world.admin.reserve(world.org, world.cluster, gpu=1)
    world.deploy(name="a-long-deployment-name-for-a-narrow-screen", required_gpu=7)
    for _ in range(3):
        world.deploy(name="waits", required_gpu=4, docker_image="registry.example:5000/t/i:1")
    page = browsers.open(width=360, height=740)
    log_in(page, server.url, world.admin.username, then=world.path)
    page.locator("#live-status[data-state=live]").wait_for()

    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    page.screenshot(path=str(tmp_path / "narrow.png"), full_page=True)

    assert widths[0] <= widths[1], widths
    assert page.locator("tr.queue-entry").count() == 3
    assert page.locator("tr.queue-entry").first.is_visible()
