"""SPEC §2 and §4, in process: request sizes and read timeouts, probes that never queue,
trusted proxies, login limits per username and failed logins per address, and failed
metrics tokens. (`test_server_limits.py` checks the same against a real server process.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

import middleware
from helpers import PASSWORD, auth, login, register
from main import create_app
from middleware import (
    MAX_REQUESTS_IN_PROGRESS,
    ConcurrencyLimitMiddleware,
    RequestSizeMiddleware,
    client_address,
    trusted_networks,
)

# --- ASGI helpers ----------------------------------------------------------------------------


def http_scope(
    path: str, method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers or [(b"host", b"testserver")],
        "client": ("192.0.2.10", 5000),
        "server": ("testserver", 80),
    }


def stalled_receive(first: bytes = b"{") -> Any:
    """A client that sent the first bytes of its body and then nothing, ever."""
    sent = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": first, "more_body": True}
        await never.wait()
        raise AssertionError("unreachable")

    return receive


def complete_receive(body: bytes = b"{}") -> Any:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class Recorder:
    """A `send` that keeps the messages sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return int(starts[0]["status"]) if starts else None

    @property
    def headers(self) -> dict[bytes, bytes]:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return dict(starts[0]["headers"]) if starts else {}


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


# --- sizes and timeouts ----------------------------------------------------------------------


@pytest.fixture
def small_bodies(tmp_path: Path, engine: Engine) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path, max_body_bytes=2048), engine=engine)
    with TestClient(app) as client:
        yield client


def test_a_body_over_the_limit_is_a_413_by_its_content_length(small_bodies: TestClient) -> None:
    response = small_bodies.post(
        "/user/register", content=b"x" * 2049, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert isinstance(response.json()["detail"], str)
    assert response.headers["connection"] == "close"


def test_a_body_at_the_limit_is_read(small_bodies: TestClient) -> None:
    body = b'{"username": "sized", "password": "' + b"p" * 100 + b'"}'
    padded = body + b" " * (2048 - len(body))

    response = small_bodies.post(
        "/user/register", content=padded, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.text


def test_a_chunked_body_over_the_limit_is_a_413_once_it_passes_the_limit() -> None:
    chunks_read = 0

    async def chunks() -> dict[str, Any]:  # 100 KB in 1 KB chunks, without a Content-Length
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b"a" * 1000, "more_body": chunks_read < 100}

    guarded = RequestSizeMiddleware(echo_app, max_body_bytes=4096)
    sent = Recorder()
    asyncio.run(guarded(http_scope("/user/register"), chunks, sent))

    assert sent.status == 413
    assert chunks_read == 5  # stopped right after the limit, never buffered more
    assert sent.headers[b"connection"] == b"close"


def test_a_body_that_stops_arriving_is_a_408() -> None:
    reached_app = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached_app
        reached_app = True

    guarded = RequestSizeMiddleware(app, max_body_bytes=4096, read_timeout=0.05)
    sent = Recorder()
    asyncio.run(asyncio.wait_for(guarded(http_scope("/user/register"), stalled_receive(), sent), 5))

    assert sent.status == 408
    assert sent.headers[b"connection"] == b"close"
    assert not reached_app


def test_headers_over_the_limit_are_a_431(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Padding": "a" * 100_000})

    assert response.status_code == 431
    assert isinstance(response.json()["detail"], str)


def test_stalled_bodies_take_no_request_slot(settings: Any) -> None:
    app = FastAPI()

    @app.post("/work")
    async def work(body: dict[str, int]) -> dict[str, int]:
        return body

    middleware.install(app, settings)

    async def scenario() -> int | None:
        stalled = [
            asyncio.create_task(app(http_scope("/work"), stalled_receive(), Recorder()))
            for _ in range(2 * MAX_REQUESTS_IN_PROGRESS)
        ]
        await asyncio.sleep(0)  # let each of them start waiting for its body
        sent = Recorder()
        headers = [(b"content-type", b"application/json")]
        try:
            await asyncio.wait_for(
                app(http_scope("/work", headers=headers), complete_receive(b'{"n": 1}'), sent), 5
            )
        finally:
            for task in stalled:
                task.cancel()
            await asyncio.gather(*stalled, return_exceptions=True)
        return sent.status

    assert asyncio.run(scenario()) == 200


@pytest.mark.parametrize("probe", ["/healthz", "/readyz"])
def test_probes_take_no_slot_when_every_slot_is_held(probe: str) -> None:
    release = asyncio.Event()
    holding = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal holding
        if scope["path"] not in ("/healthz", "/readyz"):
            holding += 1
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limited = ConcurrencyLimitMiddleware(app)

    async def scenario() -> int | None:
        tenants = [
            asyncio.create_task(limited(http_scope("/work"), complete_receive(), Recorder()))
            for _ in range(MAX_REQUESTS_IN_PROGRESS + 5)
        ]
        while holding < MAX_REQUESTS_IN_PROGRESS:
            await asyncio.sleep(0)
        sent = Recorder()
        try:
            await asyncio.wait_for(limited(http_scope(probe, "GET"), complete_receive(), sent), 5)
        finally:
            release.set()
            await asyncio.gather(*tenants)
        return sent.status

    assert asyncio.run(scenario()) == 200


# --- the caller's address --------------------------------------------------------------------

PROXIES = trusted_networks(["10.0.0.1", "10.0.1.0/24"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # not a proxy: the header is ignored
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # the client's own claim left
        ("10.0.0.1", ["6.6.6.6, 198.51.100.1, 10.0.1.7"], "198.51.100.1"),  # two proxies
        ("10.0.0.1", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # repeated header
        ("10.0.0.1", ["198.51.100.1, not-an-address"], "10.0.0.1"),
        ("10.0.0.1", ["10.0.1.7"], "10.0.1.7"),  # nothing but proxies
        ("::ffff:10.0.0.1", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    peer: str, forwarded: list[str], expected: str
) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


@pytest.fixture
def behind_a_proxy(tmp_path: Path, engine: Engine) -> FastAPI:
    settings = make_settings(tmp_path, rate_limit="3/minute", trusted_proxies={"10.0.0.1"})
    return create_app(settings, engine=engine)


def test_behind_a_trusted_proxy_each_client_has_its_own_limit(behind_a_proxy: FastAPI) -> None:
    with TestClient(behind_a_proxy, client=("10.0.0.1", 443)) as proxy:

        def me(client: str) -> int:
            return proxy.get("/user/me", headers={"X-Forwarded-For": client}).status_code

        first = [me("198.51.100.1") for _ in range(4)]
        second = me("198.51.100.2")

    assert first == [401, 401, 401, 429]
    assert second == 401


def test_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(
    behind_a_proxy: FastAPI,
) -> None:
    with TestClient(behind_a_proxy, client=("203.0.113.5", 1000)) as stranger:
        statuses = [
            stranger.get("/user/me", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
            for i in range(5)
        ]

    assert statuses == [401, 401, 401, 429, 429]


# --- logins ----------------------------------------------------------------------------------


def from_address(app: FastAPI, address: str) -> TestClient:
    """A client of an app whose lifespan another client is running."""
    return TestClient(app, client=(address, 1))


def _login(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/user/login", data={"username": username, "password": password})


def test_a_username_gets_at_most_the_login_limit_of_attempts_from_anywhere(
    tmp_path: Path, engine: Engine, client: TestClient
) -> None:
    alice, bob = register(client, "alice"), register(client, "bob")
    app = create_app(make_settings(tmp_path, login_rate_limit="3/minute"), engine=engine)

    with TestClient(app, client=("203.0.113.1", 1)) as one:
        guesses = [
            _login(from_address(app, f"198.51.100.{i}"), name, "wrong guess").status_code
            for i, name in enumerate(["alice", "ALICE", "Alice"])
        ]
        blocked = _login(one, alice)  # even with the right password, from a new address
        other_user = _login(one, bob)

    assert guesses == [401, 401, 401]
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert isinstance(blocked.json()["detail"], str)
    assert other_user.status_code == 200


def test_an_address_that_used_up_its_limit_can_still_log_in(
    tmp_path: Path, engine: Engine, client: TestClient
) -> None:
    username = register(client)
    app = create_app(make_settings(tmp_path, rate_limit="3/minute"), engine=engine)

    with TestClient(app, client=("203.0.113.2", 1)) as shared:
        noise = [shared.get("/user/me").status_code for _ in range(4)]
        logged_in = _login(shared, username)
        as_user = shared.get("/user/me", headers=auth(logged_in.json()["access_token"]))

    assert noise == [401, 401, 401, 429]
    assert logged_in.status_code == 200
    assert as_user.status_code == 200


def test_successful_logins_do_not_use_up_the_address(
    tmp_path: Path, engine: Engine, client: TestClient
) -> None:
    usernames = [register(client) for _ in range(6)]
    app = create_app(make_settings(tmp_path, rate_limit="3/minute"), engine=engine)

    with TestClient(app, client=("203.0.113.3", 1)) as office:
        statuses = [_login(office, username).status_code for username in usernames]

    assert statuses == [200] * 6


def test_failed_logins_across_usernames_stop_the_address_not_its_neighbours(
    tmp_path: Path, engine: Engine, client: TestClient
) -> None:
    username = register(client)
    app = create_app(make_settings(tmp_path, rate_limit="3/minute"), engine=engine)

    with (
        TestClient(app, client=("203.0.113.4", 1)) as sprayer,
        TestClient(app, client=("203.0.113.5", 1)) as neighbour,
    ):
        sprayed = [_login(sprayer, f"victim{i}", "Winter2026!").status_code for i in range(3)]
        stopped = _login(sprayer, username)
        elsewhere = _login(neighbour, username)

    assert sprayed == [401, 401, 401]
    assert stopped.status_code == 429
    assert elsewhere.status_code == 200


def test_a_login_limit_of_0_disables_it(tmp_path: Path, engine: Engine, client: TestClient) -> None:
    username = register(client)
    app = create_app(make_settings(tmp_path, login_rate_limit="0"), engine=engine)

    with TestClient(app) as c:
        statuses = [_login(c, username).status_code for _ in range(12)]

    assert statuses == [200] * 12


def test_the_default_login_limit_leaves_ordinary_logins_alone(client: TestClient) -> None:
    username = register(client)

    assert all("Authorization" in login(client, username) for _ in range(5))


# --- metrics tokens --------------------------------------------------------------------------


def test_wrong_metrics_tokens_count_against_the_address(tmp_path: Path, engine: Engine) -> None:
    settings = make_settings(tmp_path, rate_limit="3/minute", metrics_token="scrape-me")
    app = create_app(settings, engine=engine)

    with TestClient(app, client=("203.0.113.9", 1)) as c:
        guesses = [c.get("/metrics", headers=auth(f"guess-{i}")).status_code for i in range(3)] + [
            c.get("/metrics").status_code
        ]
        blocked = c.get("/metrics", headers=auth("guess-4"))
        operator = [c.get("/metrics", headers=auth("scrape-me")).status_code for _ in range(5)]

    assert guesses == [401, 401, 401, 429]
    assert blocked.status_code == 429
    assert "Retry-After" in blocked.headers
    assert operator == [200] * 5  # the operator's scrapes are never limited
