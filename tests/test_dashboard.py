"""The dashboard at /ui, in process, the way a person uses it: log in through the form, read
the pages, submit, preview and cancel through the forms; and what it refuses: strangers
(redirected to log in), other tenants (404), forged forms (403, nothing changes), viewers
(no controls, and a forged viewer post is 403)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from test_event_stream import Reader

import routes.events
from helpers import PASSWORD, auth, create_cluster, create_org, register, unique
from main import create_app
from middleware import SESSION_COOKIE
from utils import Settings

CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


class Person:
    """Someone with a browser of their own (a cookie jar) on the dashboard, and a token
    for the API."""

    def __init__(
        self,
        app: FastAPI,
        username: str,
        base_url: str = "http://testserver",
        peer: tuple[str, int] = ("testclient", 50000),
    ) -> None:
        self.username = username
        self.browser = TestClient(app, base_url=base_url, follow_redirects=False, client=peer)
        answer = self.browser.post("/user/login", data={"username": username, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        self.api = auth(answer.json()["access_token"])

    def log_in(self, password: str = PASSWORD) -> Any:
        form = self.browser.get("/ui/login")
        assert form.status_code == 200
        return self.browser.post(
            "/ui/login",
            data={"username": self.username, "password": password, "csrf_token": csrf_of(form)},
        )

    def page(self, path: str, status: int = 200) -> str:
        answer = self.browser.get(path)
        assert answer.status_code == status, (path, answer.status_code, answer.text[:500])
        return answer.text

    def submit(self, path: str, fields: dict[str, str], token: str | None = None) -> Any:
        """Post a form as the page at `path` would, with its CSRF token unless given one."""
        if token is None:
            token = csrf_of(self.browser.get(path))
        target = path + "/deployments" if "/clusters/" in path else path + "/cancel"
        return self.browser.post(target, data={**fields, "csrf_token": token})


def csrf_of(answer: Any) -> str:
    found = CSRF.search(answer.text)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


@pytest.fixture
def person(app: FastAPI, client: TestClient) -> Callable[[], Person]:
    """A new registered user each call (the `client` fixture runs the app's lifespan)."""

    def make() -> Person:
        return Person(app, register(client))

    return make


class Org:
    """An admin's organization with a 4-GPU cluster, and people in it by role."""

    def __init__(self, client: TestClient, person: Callable[[], Person]) -> None:
        self.client = client
        self.person = person
        self.admin = person()
        self.name = create_org(client, self.admin.api)["name"]
        self.cluster = create_cluster(client, self.admin.api, self.name, cpu=16, ram=64, gpu=4)[
            "name"
        ]
        self.url = f"/ui/orgs/{self.name}/clusters/{self.cluster}"

    def member(self, role: str) -> Person:
        rotated = self.client.post(
            f"/organization/{self.name}/invite-code/rotate",
            json={"role": role},
            headers=self.admin.api,
        )
        newcomer = self.person()
        joined = self.client.post(
            "/user/join", json={"invite_code": rotated.json()["invite_code"]}, headers=newcomer.api
        )
        assert joined.status_code == 200, joined.text
        return newcomer

    def deploy(self, who: Person | None = None, **fields: Any) -> dict[str, Any]:
        body = {
            "cluster_name": self.cluster,
            "organization_name": self.name,
            "docker_image": "ghcr.io/acme/train:1.0",
            "required_cpu": 1,
            "required_ram": 1,
            "required_gpu": 0,
            **fields,
        }
        answer = self.client.post("/deployment/create", json=body, headers=(who or self.admin).api)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def deployments(self) -> list[dict[str, Any]]:
        answer = self.client.get(
            f"/deployment/list/{self.cluster}",
            params={"organization_name": self.name},
            headers=self.admin.api,
        )
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["deployments"]
        return found

    def status_of(self, deployment: dict[str, Any]) -> str:
        answer = self.client.get(f"/deployment/{deployment['id']}", headers=self.admin.api)
        return str(answer.json()["status"])


@pytest.fixture
def org(client: TestClient, person: Callable[[], Person]) -> Org:
    return Org(client, person)


FORM = {
    "docker_image": "ghcr.io/acme/train:1.0",
    "name": "from-the-form",
    "cpu": "2",
    "ram": "8",
    "gpu": "1",
    "priority": "3",
    "duration": "",
    "depends_on": "",
}


# --- logging in --------------------------------------------------------------------------


def test_logging_in_sets_an_http_only_same_site_strict_session_cookie_for_ui_paths(
    org: Org, settings: Settings
) -> None:
    answer = org.admin.log_in()

    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/"
    (cookie,) = [c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)]
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=strict"
    assert attributes["path"] == "Path=/ui"
    assert attributes["max-age"] == f"Max-Age={settings.token_ttl_minutes * 60}"
    assert "expires" in attributes
    assert "secure" not in attributes  # the request was plain http
    assert org.name in org.admin.page("/ui/")


def test_over_https_the_session_cookie_is_secure(app: FastAPI, client: TestClient) -> None:
    someone = Person(app, register(client), base_url="https://testserver")

    answer = someone.log_in()

    (cookie,) = [c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)]
    assert "secure" in cookie.lower().split("; ")


def test_a_trusted_proxy_saying_https_makes_the_cookie_secure_and_no_one_else_can(
    tmp_path: Path, engine: Engine
) -> None:
    proxied = create_app(make_settings(tmp_path, trusted_proxies=["10.0.0.1"]), engine=engine)
    with TestClient(proxied) as client:
        username = register(client)
        secure = []
        for peer in (("10.0.0.1", 4000), ("10.0.0.2", 4000)):
            someone = Person(proxied, username, peer=peer)
            form = someone.browser.get("/ui/login")
            answer = someone.browser.post(
                "/ui/login",
                data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(form)},
                headers={"X-Forwarded-Proto": "https"},
            )
            (cookie,) = [
                c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)
            ]
            secure.append("secure" in cookie.lower().split("; "))

    assert secure == [True, False]


def test_a_wrong_password_shows_the_form_again_with_401_and_no_session(org: Org) -> None:
    answer = org.admin.log_in(password="not the password")

    assert answer.status_code == 401
    assert "incorrect username or password" in answer.text
    assert not any(c.startswith(SESSION_COOKIE) for c in answer.headers.get_list("set-cookie"))
    assert org.admin.browser.get("/ui/").status_code == 303


def test_a_login_post_without_the_forms_token_is_refused(org: Org) -> None:
    credentials = {"username": org.admin.username, "password": PASSWORD}
    org.admin.browser.get("/ui/login")  # has the pre-session cookie, not the token

    forged = org.admin.browser.post("/ui/login", data={**credentials, "csrf_token": "x" * 64})
    bare = org.admin.browser.post("/ui/login", data=credentials)

    assert forged.status_code == bare.status_code == 403
    assert org.admin.browser.get("/ui/").status_code == 303  # still not logged in


def test_pages_send_strangers_to_the_login_form_and_come_back_after_it(org: Org) -> None:
    stranger = org.admin.browser
    answer = stranger.get(org.url)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/ui/login?next={org.url}"
    assert stranger.get(org.url + "/live").status_code == 401
    assert stranger.get(org.url + "/stream").status_code == 401

    form = stranger.get(answer.headers["location"])
    logged_in = stranger.post(
        "/ui/login",
        data={
            "username": org.admin.username,
            "password": PASSWORD,
            "csrf_token": csrf_of(form),
            "next": org.url,
        },
    )

    assert logged_in.headers["location"] == org.url


def test_after_login_the_next_page_is_never_another_site(org: Org) -> None:
    form = org.admin.browser.get("/ui/login")
    answer = org.admin.browser.post(
        "/ui/login",
        data={
            "username": org.admin.username,
            "password": PASSWORD,
            "csrf_token": csrf_of(form),
            "next": "//evil.example/ui/",
        },
    )
    assert answer.headers["location"] == "/ui/"


def test_an_expired_session_is_sent_to_log_in_again(org: Org, clock: Any) -> None:
    org.admin.log_in()
    assert org.admin.browser.get("/ui/").status_code == 200

    clock.advance(61 * 60)

    assert org.admin.browser.get("/ui/").headers["location"].startswith("/ui/login")


def test_logging_out_needs_the_token_and_ends_the_session(org: Org) -> None:
    org.admin.log_in()
    token = csrf_of(org.admin.browser.get("/ui/"))

    refused = org.admin.browser.post("/ui/logout", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert org.admin.browser.get("/ui/").status_code == 200

    answer = org.admin.browser.post("/ui/logout", data={"csrf_token": token})
    assert answer.status_code == 303
    assert org.admin.browser.get("/ui/").status_code == 303


def test_every_page_forbids_framing_and_foreign_scripts(org: Org) -> None:
    org.admin.log_in()
    for path in ("/ui/login", "/ui/", org.url):
        answer = org.admin.browser.get(path)
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
        assert "<script>" not in answer.text  # no inline script: the CSP would block it


# --- reading ------------------------------------------------------------------------------


def test_the_home_page_lists_your_organizations_and_each_clusters_capacity(org: Org) -> None:
    org.admin.log_in()
    other = create_org(org.client, org.admin.api)["name"]
    org.client.post(
        "/cluster/allocate",
        json={
            "cluster_name": org.cluster,
            "organization_name": org.name,
            "cpu": 0,
            "ram": 0,
            "gpu": 1,
        },
        headers=org.admin.api,
    )
    org.deploy(required_gpu=2)

    page = org.admin.page("/ui/")

    assert f'href="/ui/orgs/{org.name}"' in page and f'href="/ui/orgs/{other}"' in page
    assert f'href="{org.url}"' in page
    assert 'aria-label="gpu: 2 running, 1 reserved, 1 free of 4"' in page
    # The bar's segments: 1 of 4 reserved (25%), then 2 of 4 running (50%).
    assert 'class="seg-reserved" x="0" y="0" width="25.00"' in page
    assert 'class="seg-running" x="25.00" y="0" width="50.00"' in page


def test_the_cluster_page_shows_the_queue_with_positions_reasons_and_the_running_list(
    org: Org,
) -> None:
    org.admin.log_in()
    running = org.deploy(required_gpu=4, name="big")
    waiting = org.deploy(required_gpu=2, name="small")

    page = org.admin.page(org.url)

    queue = page[page.index("<h2>Queue") : page.index("<h2>Running")]
    running_part = page[page.index("<h2>Running") : page.index("<h2>Recent runs")]
    assert f'data-deployment-id="{waiting["id"]}"' in queue
    assert 'class="position">1<' in queue
    assert "needs 2 gpu, 0 available" in queue
    assert f'data-deployment-id="{running["id"]}"' in running_part
    assert f'data-deployment-id="{waiting["id"]}"' not in running_part
    assert 'class="deploy-form"' in page  # an admin may submit


def test_the_deployment_page_shows_its_fields_and_events(org: Org) -> None:
    org.admin.log_in()
    deployment = org.deploy(required_gpu=1, name="train-llm", duration_seconds=600)

    page = org.admin.page(f"/ui/deployments/{deployment['id']}")

    assert "train-llm" in page and "ghcr.io/acme/train:1.0" in page
    assert 'class="event event-created"' in page and 'class="event event-started"' in page
    assert 'id="cancel"' in page


def test_the_live_fragment_is_the_live_part_of_the_page_alone(org: Org) -> None:
    org.admin.log_in()
    waiting = org.deploy(required_gpu=4)
    org.deploy(required_gpu=4)

    fragment = org.admin.page(org.url + "/live")

    assert f'data-deployment-id="{waiting["id"]}"' in fragment
    assert "<html" not in fragment and "deploy-form" not in fragment


def test_the_stream_of_the_page_sends_the_clusters_events_to_its_session(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes.events, "KEEP_ALIVE_SECONDS", 0.3)
    org.admin.log_in()
    deployment = org.deploy(required_gpu=1)

    with org.admin.browser.stream("GET", org.url + "/stream?after=0") as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        created, started = Reader(answer).events(2)

    assert (created["event"], started["event"]) == ("created", "started")
    assert created["data"]["deployment_id"] == deployment["id"]


# --- other tenants -----------------------------------------------------------------------


def test_another_organizations_pages_are_404_like_names_that_do_not_exist(
    org: Org, person: Callable[[], Person]
) -> None:
    deployment = org.deploy(required_gpu=1, name="secret-run")
    outsider = person()
    outsider.log_in()
    token = csrf_of(outsider.browser.get("/ui/"))

    theirs = {
        f"/ui/orgs/{org.name}": f"/ui/orgs/{unique('nothing')}",
        org.url: f"/ui/orgs/{unique('nothing')}/clusters/{org.cluster}",
        f"/ui/deployments/{deployment['id']}": "/ui/deployments/999999",
    }
    for path, missing in theirs.items():
        hidden, absent = outsider.browser.get(path), outsider.browser.get(missing)
        assert hidden.status_code == absent.status_code == 404, path
        assert "not found" in hidden.text and "not found" in absent.text
        assert "secret-run" not in hidden.text and "ghcr.io" not in hidden.text
    for path in (org.url + "/live", org.url + "/stream"):
        assert outsider.browser.get(path).status_code == 404
    before = org.deployments()
    assert outsider.submit(org.url, {**FORM, "action": "create"}, token).status_code == 404
    cancel = outsider.submit(f"/ui/deployments/{deployment['id']}", {}, token)
    assert cancel.status_code == 404
    assert org.deployments() == before


def test_a_path_that_cannot_be_a_name_or_an_id_is_404_not_500(org: Org) -> None:
    org.admin.log_in()
    for path in (
        "/ui/orgs/a%00b",
        "/ui/orgs/x/clusters/%00%00%00",
        "/ui/deployments/1e9",
        "/ui/deployments/99999999999999999999",
        "/ui/deployments/0",
    ):
        assert org.admin.browser.get(path).status_code == 404, path


# --- forms ------------------------------------------------------------------------------


def test_creating_through_the_form_stores_the_deployment_and_shows_its_page(org: Org) -> None:
    org.admin.log_in()

    answer = org.admin.submit(org.url, {**FORM, "action": "create"})

    assert answer.status_code == 303
    (created,) = org.deployments()
    assert answer.headers["location"] == f"/ui/deployments/{created['id']}"
    assert (created["name"], created["required_gpu"], created["priority"]) == (
        "from-the-form",
        1,
        3,
    )
    assert created["created_by"] == org.admin.username
    assert "from-the-form" in org.admin.page(answer.headers["location"])


def test_previewing_through_the_form_shows_what_would_happen_and_stores_nothing(
    org: Org,
) -> None:
    org.admin.log_in()
    low = org.deploy(required_gpu=4, priority=0)

    answer = org.admin.submit(org.url, {**FORM, "gpu": "2", "priority": "9", "action": "preview"})

    assert answer.status_code == 200
    preview = answer.text[answer.text.index('id="preview-result"') :]
    assert 'class="would-start">yes, now' in preview
    assert f'href="/ui/deployments/{low["id"]}">#{low["id"]}</a>' in preview
    assert [d["id"] for d in org.deployments()] == [low["id"]]
    assert org.status_of(low) == "running"
    assert 'value="from-the-form"' in answer.text  # the form keeps what was typed


def test_a_preview_that_would_wait_shows_its_position_and_reason(org: Org) -> None:
    org.admin.log_in()
    org.deploy(required_gpu=4, priority=5)

    answer = org.admin.submit(org.url, {**FORM, "gpu": "2", "action": "preview"})

    assert 'class="would-start">no, it would wait' in answer.text
    assert 'class="queue-position">1<' in answer.text
    assert "needs 2 gpu, 0 available" in answer.text


def test_cancelling_through_the_form_cancels_it(org: Org) -> None:
    org.admin.log_in()
    deployment = org.deploy(required_gpu=1)
    path = f"/ui/deployments/{deployment['id']}"

    answer = org.admin.submit(path, {})

    assert answer.status_code == 303 and answer.headers["location"] == path
    assert org.status_of(deployment) == "cancelled"
    page = org.admin.page(path)
    assert 'id="cancel"' not in page  # nothing left to cancel
    assert "cancelled by " + org.admin.username in page


def test_cancelling_a_finished_deployment_shows_the_409_on_the_page(org: Org) -> None:
    org.admin.log_in()
    deployment = org.deploy(required_gpu=1)
    path = f"/ui/deployments/{deployment['id']}"
    token = csrf_of(org.admin.browser.get(path))
    org.client.delete(f"/deployment/delete/{deployment['id']}", headers=org.admin.api)

    answer = org.admin.submit(path, {}, token)

    assert answer.status_code == 409
    assert f"deployment {deployment['id']} is already cancelled" in answer.text
    assert '<span class="badge">409</span>' in answer.text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"gpu": "8"}, "the request exceeds the cluster&#39;s total capacity"),
        ({"gpu": "two"}, "gpu must be a whole number"),
        ({"docker_image": "Not An Image!"}, "image: String should match pattern"),
        ({"cpu": "0", "ram": "0", "gpu": "0"}, "a deployment must request at least one unit"),
        ({"depends_on": "424242"}, "unknown dependencies: 424242"),
        ({"priority": "1001"}, "priority: Input should be less than or equal to 1000"),
    ],
)
def test_a_refused_form_shows_why_on_the_page_with_the_apis_status(
    org: Org, fields: dict[str, str], message: str
) -> None:
    org.admin.log_in()

    answer = org.admin.submit(org.url, {**FORM, **fields, "action": "create"})

    assert answer.status_code == 422
    assert message in answer.text
    assert 'id="form-error"><span class="badge">422</span>' in answer.text
    assert org.deployments() == []


@pytest.mark.parametrize("token", ["", "0" * 64, "forged"])
def test_a_forged_post_is_refused_and_changes_nothing(org: Org, token: str) -> None:
    org.admin.log_in()
    running = org.deploy(required_gpu=1)
    before = org.deployments()

    created = org.admin.browser.post(
        org.url + "/deployments", data={**FORM, "action": "create", "csrf_token": token}
    )
    cancelled = org.admin.browser.post(
        f"/ui/deployments/{running['id']}/cancel", data={"csrf_token": token}
    )

    assert created.status_code == cancelled.status_code == 403
    assert "CSRF" in created.text
    assert org.deployments() == before


def test_a_token_from_another_session_is_refused(org: Org) -> None:
    developer = org.member("developer")
    developer.log_in()
    org.admin.log_in()
    admins_token = csrf_of(org.admin.browser.get(org.url))

    answer = developer.submit(org.url, {**FORM, "action": "create"}, admins_token)

    assert answer.status_code == 403
    assert org.deployments() == []


def test_a_developer_gets_the_forms_and_may_use_them(org: Org) -> None:
    developer = org.member("developer")
    developer.log_in()

    page = developer.page(org.url)
    answer = developer.submit(org.url, {**FORM, "action": "create"})

    assert 'class="deploy-form"' in page
    assert answer.status_code == 303
    assert [d["created_by"] for d in org.deployments()] == [developer.username]


def test_a_viewer_sees_no_controls_and_a_viewers_forged_post_is_403(org: Org) -> None:
    viewer = org.member("viewer")
    viewer.log_in()
    deployment = org.deploy(required_gpu=1)
    before = org.deployments()

    cluster_page = viewer.page(org.url)
    deployment_page = viewer.page(f"/ui/deployments/{deployment['id']}")
    token = csrf_of(viewer.browser.get("/ui/"))  # a valid token of the viewer's own session
    created = viewer.submit(org.url, {**FORM, "action": "create"}, token)
    previewed = viewer.submit(org.url, {**FORM, "action": "preview"}, token)
    cancelled = viewer.submit(f"/ui/deployments/{deployment['id']}", {}, token)

    assert "deploy-form" not in cluster_page and "Preview" not in cluster_page
    assert 'id="cancel"' not in deployment_page
    assert f'data-deployment-id="{deployment["id"]}"' in cluster_page  # but sees the cluster
    assert created.status_code == previewed.status_code == cancelled.status_code == 403
    assert "this needs the developer role" in created.text
    assert org.deployments() == before


# --- the timeline ----------------------------------------------------------------------


def test_the_timeline_marks_a_preemption_once_one_happens(org: Org, clock: Any) -> None:
    org.admin.log_in()
    victim = org.deploy(required_gpu=4, priority=0, name="victim")
    clock.advance(30)
    before = org.admin.page(org.url)
    assert 'class="preemption"' not in before
    assert 'class="run run-running"' in before

    urgent = org.deploy(required_gpu=4, priority=9, name="urgent")
    clock.advance(30)
    after = org.admin.page(org.url)

    timeline = after[after.index('id="timeline"') : after.index('id="timeline-compact"')]
    compact = after[after.index('id="timeline-compact"') :]
    assert timeline.count('class="preemption"') == compact.count('class="preemption"') == 1
    assert f"#{victim['id']} preempted by deployment {urgent['id']}" in timeline
    assert 'class="run run-preempted"' in timeline
    assert 'class="run run-running"' in timeline  # the urgent one, still running
    assert f"#{victim['id']} victim" in timeline and f"#{urgent['id']} urgent" in timeline


def test_the_timeline_shows_the_most_recently_started_of_many_running(org: Org, clock: Any) -> None:
    org.admin.log_in()
    running = [org.deploy(required_cpu=0, required_ram=1)["id"] for _ in range(25)]
    clock.advance(30)

    page = org.admin.page(org.url)

    timeline = page[page.index('id="timeline"') : page.index('id="timeline-compact"')]
    assert timeline.count('class="run run-running"') == 20
    shown = [i for i in running if f"#{i} " in timeline]
    assert shown == running[-20:]


def test_the_timeline_shows_how_each_run_ended(org: Org, clock: Any) -> None:
    org.admin.log_in()
    done = org.deploy(required_gpu=1, duration_seconds=10)
    cancelled = org.deploy(required_gpu=1)
    failed = org.deploy(required_gpu=1)
    clock.advance(20)
    org.client.delete(f"/deployment/delete/{cancelled['id']}", headers=org.admin.api)
    org.client.post(
        f"/deployment/{failed['id']}/status", json={"status": "failed"}, headers=org.admin.api
    )

    timeline = org.admin.page(org.url).split('id="timeline"')[1]

    for outcome in ("completed", "cancelled", "failed"):
        assert f'class="run run-{outcome}"' in timeline, outcome
    assert f"#{done['id']} from" in timeline


# --- rate limits -------------------------------------------------------------------------


def test_the_apis_rate_limit_covers_the_dashboard_per_logged_in_user(
    tmp_path: Path, engine: Engine
) -> None:
    limited = create_app(make_settings(tmp_path, rate_limit="8/minute"), engine=engine)
    with TestClient(limited) as client:
        first, second = register(client), register(client)
        alice, bob = Person(limited, first), Person(limited, second)
        alice.log_in()
        bob.log_in()
        answers = [alice.browser.get("/ui/") for _ in range(9)]

        assert [a.status_code for a in answers] == [200] * 8 + [429]
        assert "Retry-After" in answers[-1].headers
        assert bob.browser.get("/ui/").status_code == 200  # the same address, another user


def test_the_login_forms_attempts_count_against_the_username_like_the_apis(
    tmp_path: Path, engine: Engine
) -> None:
    limited = create_app(make_settings(tmp_path, login_rate_limit="3/minute"), engine=engine)
    with TestClient(limited) as client:
        someone = Person(limited, register(client))  # one API login: 1 of the 3
        wrong = [someone.log_in(password="wrong password").status_code for _ in range(2)]

        assert wrong == [401, 401]
        assert someone.log_in().status_code == 429


# --- the timeline's drawing ---------------------------------------------------------------


def test_a_timeline_drawing_puts_each_run_in_its_row_and_marks_where_a_preemption_ended_it() -> (
    None
):
    from datetime import UTC, datetime, timedelta

    from services.dashboard import Run, Timeline
    from ui.timeline import COMPACT, LABEL_WIDTH, WIDTH, draw

    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    at = [start + timedelta(seconds=s) for s in (0, 40, 60, 100)]
    runs = [
        Run(1, "train", 1, at[0], at[1], "preempted", "preempted by deployment 2"),
        Run(2, "urgent", 9, at[1], at[2], "completed", "completed"),
        Run(1, "train", 1, at[2], None, "running", "running"),
    ]

    drawing = draw(Timeline(start=at[0], end=at[3], runs=runs))

    assert [row.label for row in drawing.rows] == ["#1 train · p1", "#2 urgent · p9"]
    first, second, again = drawing.bars
    assert first.y == again.y != second.y  # one row per deployment
    assert first.x == LABEL_WIDTH and again.x + again.width == drawing.now_x <= WIDTH
    assert first.x < first.x + first.width == second.x < again.x  # in time order
    (mark,) = drawing.marks
    assert mark.x == first.x + first.width and "preempted by deployment 2" in mark.title
    assert all(LABEL_WIDTH <= tick.x <= WIDTH for tick in drawing.ticks)
    assert [tick.label for tick in drawing.ticks if tick.label][:2] == ["09:00:00", "09:00:30"]

    compact = draw(Timeline(start=at[0], end=at[3], runs=runs), COMPACT)
    assert compact.width < drawing.width
    for row, bar in zip(compact.rows, compact.bars[:2], strict=True):
        assert row.label_y < bar.y  # each label above its own bar, not beside it
    assert compact.marks[0].x == compact.bars[0].x + compact.bars[0].width


def test_a_form_posted_without_a_session_leads_back_to_its_page_after_login(org: Org) -> None:
    deployment = org.deploy(required_gpu=1)
    stranger = org.admin.browser

    created = stranger.post(org.url + "/deployments", data={**FORM, "action": "create"})
    cancelled = stranger.post(f"/ui/deployments/{deployment['id']}/cancel", data={})

    assert created.headers["location"] == f"/ui/login?next={org.url}"
    assert cancelled.headers["location"] == f"/ui/login?next=/ui/deployments/{deployment['id']}"
    assert len(org.deployments()) == 1 and org.status_of(deployment) == "running"


def test_an_overlong_field_is_a_readable_refusal_not_a_bare_422(org: Org) -> None:
    org.admin.log_in()

    answer = org.admin.submit(org.url, {**FORM, "name": "n" * 5000, "action": "create"})

    assert answer.status_code == 422
    assert "name: String should have at most 63 characters" in answer.text
    assert org.deployments() == []


def test_a_form_action_the_page_does_not_have_creates_nothing(org: Org) -> None:
    org.admin.log_in()

    answer = org.admin.submit(org.url, {**FORM, "action": "Preview"})

    assert answer.status_code == 422
    assert "unknown action" in answer.text
    assert org.deployments() == []


@pytest.mark.parametrize(
    "field", ["name", "docker_image", "cpu", "priority", "duration", "depends_on", "action"]
)
def test_hostile_form_values_are_refused_readably_never_a_500(org: Org, field: str) -> None:
    org.admin.log_in()

    for value in (
        "\x00",
        "a\x00b",
        "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),
        "9" * 40,
        "-1",
        "１２",
    ):
        form = {**FORM, "action": "create", field: value}  # `action` itself hostile too
        answer = org.admin.submit(org.url, form)
        assert answer.status_code in (303, 422), (field, value, answer.status_code)

    if field in ("cpu", "priority", "duration", "depends_on", "action"):  # none is valid
        assert org.deployments() == []


def test_hostile_login_values_are_a_401_never_a_500(org: Org) -> None:
    for username, password in (("a\x00b", PASSWORD), (org.admin.username, "\x00" * 10), ("", "")):
        form = org.admin.browser.get("/ui/login")
        answer = org.admin.browser.post(
            "/ui/login",
            data={"username": username, "password": password, "csrf_token": csrf_of(form)},
        )
        assert answer.status_code == 401, (username, password)
