"""The event feed live: SPEC §4 "Events" with `Accept: text/event-stream`.

In-process streams through the whole middleware stack; the stream's polls, with their
waits for ids that commit out of order, driven by an explicit clock; and two real server
processes on one database, a stream on one seeing what the other commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from conftest import ON_POSTGRES, TEST_DATABASE_URL
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from workloads import Team, make_team

import middleware
import routes.events
import services.events
from database import make_session_factory
from helpers import PASSWORD, create_cluster, member_with_role
from models import Organization
from routes.events import stop_streams, wants_event_stream
from services.events import EventFeed, EventFollower
from services.scheduling import record
from utils import utcnow

ROOT = Path(__file__).resolve().parent.parent
SSE = {"Accept": "text/event-stream"}
BOUND = 10.0  # seconds any wait on a stream may take before the test fails


@pytest.fixture(autouse=True)
def _lively_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle streams write a comment every 0.3 s, so a reader wakes to check its deadline."""
    monkeypatch.setattr(routes.events, "KEEP_ALIVE_SECONDS", 0.3)


@pytest.fixture
def team(client: TestClient) -> Team:
    return make_team(client, gpu=8)


class Reader:
    """The frames of one stream, read from its lines (which can be iterated only once)."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.lines = response.iter_lines()
        self.expired = False

    def frames(self, within: float = BOUND) -> Iterator[dict[str, Any]]:
        """Frames parsed: events as {"id", "event", "data"}, comments as {"comment"}; ends
        with the stream, or fails once `within` seconds have passed (a watchdog closes a
        stream that sends nothing at all)."""
        deadline = time.monotonic() + within
        watchdog = threading.Timer(within + 1, self._expire)
        watchdog.start()
        try:
            yield from self._parse(deadline)
        except Exception:
            assert not self.expired, "the stream sent nothing in time"
            raise
        finally:
            watchdog.cancel()
        assert not self.expired, "the stream sent nothing in time"

    def _expire(self) -> None:
        self.expired = True
        self.response.close()

    def _parse(self, deadline: float) -> Iterator[dict[str, Any]]:
        frame: dict[str, Any] = {}
        for line in self.lines:
            assert time.monotonic() < deadline, "the stream did not deliver in time"
            if line.startswith(":"):
                yield {"comment": line[1:].strip()}
            elif line == "":
                if frame:
                    yield frame
                frame = {}
            else:
                field, _, value = line.partition(": ")
                frame[field] = json.loads(value) if field == "data" else value

    def events(self, count: int, within: float = BOUND) -> list[dict[str, Any]]:
        """The next `count` events (comments skipped)."""
        found = []
        for frame in self.frames(within):
            if "id" in frame:
                found.append(frame)
                if len(found) == count:
                    return found
        raise AssertionError(f"the stream ended after {len(found)} of {count} events")

    def until_closed(self) -> list[dict[str, Any]]:
        """Every frame left, once the server ends the stream (within the bound)."""
        return list(self.frames())


def events_of(response: Any, count: int) -> list[dict[str, Any]]:
    return Reader(response).events(count)


def frames(response: Any) -> Iterator[dict[str, Any]]:
    return Reader(response).frames()


def page(team: Team, **query: Any) -> list[dict[str, Any]]:
    response = team.client.get(
        f"/organization/{team.org}/events", params=query, headers=team.headers
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def test_a_stream_frames_each_event_with_its_id_type_and_data(team: Team) -> None:
    team.deploy(gpu=1)
    team.deploy(gpu=1)
    expected = page(team)

    with team.client.stream(
        "GET", f"/organization/{team.org}/events", headers={**team.headers, **SSE}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        got = events_of(response, len(expected))

    assert [(f["id"], f["event"], f["data"]) for f in got] == [
        (str(e["id"]), e["type"], e) for e in expected
    ]


def test_a_stream_resumes_after_last_event_id_and_misses_nothing(team: Team) -> None:
    for _ in range(3):
        team.deploy(gpu=1)
    everything = [e["id"] for e in page(team)]
    url = f"/organization/{team.org}/events"

    # Last-Event-ID wins over `after`.
    with team.client.stream(
        "GET",
        url,
        params={"after": everything[4]},
        headers={**team.headers, **SSE, "Last-Event-ID": str(everything[1])},
    ) as response:
        first = events_of(response, 2)
    assert [int(f["id"]) for f in first] == everything[2:4]

    # Reconnecting with the last id seen picks up exactly after it, new events included.
    team.deploy(gpu=1)
    with team.client.stream(
        "GET", url, headers={**team.headers, **SSE, "Last-Event-ID": first[-1]["id"]}
    ) as response:
        rest = events_of(response, 4)
    assert [int(f["id"]) for f in rest] == [e["id"] for e in page(team)][4:8]

    # Without Last-Event-ID the stream starts after `after`.
    with team.client.stream(
        "GET", url, params={"after": everything[-1]}, headers={**team.headers, **SSE}
    ) as response:
        assert [f["event"] for f in events_of(response, 2)] == ["created", "started"]


def test_new_events_stream_live_and_only_the_filtered_ones(team: Team) -> None:
    other = create_cluster(team.client, team.headers, team.org, gpu=1)["name"]
    url = f"/organization/{team.org}/events"

    with team.client.stream(
        "GET", url, params={"cluster_name": other}, headers={**team.headers, **SSE}
    ) as response:
        team.deploy(gpu=1)  # in the first cluster: not for this stream
        wanted = team.deploy(gpu=1, cluster_name=other)
        got = events_of(response, 2)

    assert [(f["data"]["deployment_id"], f["event"]) for f in got] == [
        (wanted["id"], "created"),
        (wanted["id"], "started"),
    ]
    assert {f["data"]["cluster_name"] for f in got} == {other}


def test_an_idle_stream_sends_keep_alive_comments(team: Team) -> None:
    with team.client.stream(
        "GET", f"/organization/{team.org}/events", headers={**team.headers, **SSE}
    ) as response:
        first = next(frames(response))

    assert first == {"comment": "keep-alive"}


def test_the_stream_ends_when_its_reader_leaves_the_organization(team: Team) -> None:
    developer = member_with_role(team.client, team.headers, team.org, "developer")
    username = team.client.get("/user/me", headers=developer).json()["username"]

    with team.client.stream(
        "GET", f"/organization/{team.org}/events", headers={**developer, **SSE}
    ) as response:
        left = team.client.delete(
            f"/organization/{team.org}/members/{username}", headers=team.headers
        )
        assert left.status_code == 204
        rest = Reader(response).until_closed()

    assert all("id" not in frame for frame in rest)


def test_the_stream_ends_when_the_app_stops(app: FastAPI, team: Team) -> None:
    with team.client.stream(
        "GET", f"/organization/{team.org}/events", headers={**team.headers, **SSE}
    ) as response:
        stop_streams(app)
        Reader(response).until_closed()


def test_what_a_page_refuses_a_stream_refuses_before_it_starts(team: Team) -> None:
    stranger = make_team(team.client)
    url = f"/organization/{team.org}/events"

    foreign = team.client.get(
        f"/organization/{stranger.org}/events", headers={**team.headers, **SSE}
    )
    unknown_cluster = team.client.get(
        url, params={"cluster_name": "nope"}, headers={**team.headers, **SSE}
    )
    bad_resume = [
        team.client.get(url, headers={**team.headers, **SSE, "Last-Event-ID": value})
        for value in ("-1", "abc", str(2**63))
    ]

    for response in (foreign, unknown_cluster):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
    assert [response.status_code for response in bad_resume] == [422, 422, 422]
    # A page ignores Last-Event-ID: it pages by `after` alone.
    team.deploy(gpu=1)
    plain = team.client.get(url, headers={**team.headers, "Last-Event-ID": "1"})
    assert [e["type"] for e in plain.json()["events"]] == ["created", "started"]


@pytest.mark.parametrize(
    ("accept", "streams"),
    [
        ("text/event-stream", True),
        ("Text/Event-Stream; charset=utf-8", True),
        ("application/json, text/event-stream;q=0.5", True),
        ("text/event-stream;q=0", False),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_the_accept_header_chooses_the_stream(accept: str, streams: bool) -> None:
    assert wants_event_stream(accept) is streams


def test_an_open_stream_gives_its_request_slot_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process bounds the requests in progress; a stream gives its slot back once its
    headers are out (it lasts as long as its client), so open streams never keep the API
    from answering. Other responses keep theirs to the end, released exactly once."""
    monkeypatch.setattr(middleware, "MAX_REQUESTS_IN_PROGRESS", 1)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        kind = b"text/event-stream" if scope["path"] == "/stream" else b"application/json"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]}
        )
        if kind == b"text/event-stream":
            await asyncio.Event().wait()  # streams until the client goes
        await send({"type": "http.response.body", "body": b"{}"})

    limited = middleware.ConcurrencyLimitMiddleware(app)

    async def never() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError

    async def main() -> None:
        headers_out = asyncio.Event()

        async def stream_send(message: dict[str, Any]) -> None:
            headers_out.set()

        async def ignore(message: dict[str, Any]) -> None:
            pass

        stream = asyncio.create_task(
            limited({"type": "http", "path": "/stream"}, never, stream_send)
        )
        await asyncio.wait_for(headers_out.wait(), BOUND)
        plain = {"type": "http", "path": "/plain"}
        await asyncio.wait_for(limited(plain, never, ignore), BOUND)  # TimeoutError if held
        await asyncio.wait_for(limited(plain, never, ignore), BOUND)
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream
        await asyncio.wait_for(limited.slots.acquire(), BOUND)
        assert limited.slots.locked()  # one slot, back once: never released twice

    asyncio.run(main())


def test_a_stream_behind_the_retry_middleware_waits_for_the_client_without_spinning() -> None:
    """The retry middleware replays the request body; after it, a streaming response must
    get the client's own messages (the disconnect), or its wait for them spins forever
    and starves the event loop."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def body() -> AsyncIterator[str]:
            for i in range(3):
                yield f"data: {i}\n\n"
                await asyncio.sleep(0.01)

        await StreamingResponse(body(), media_type="text/event-stream")(scope, receive, send)

    sent: list[str] = []

    async def serve() -> None:
        messages = iter([{"type": "http.request", "body": b"", "more_body": False}])

        async def receive() -> dict[str, Any]:
            try:
                return next(messages)
            except StopIteration:
                await asyncio.sleep(3600)  # the client stays connected
                raise

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "GET", "headers": []}
        await middleware.RetryAbortedTransactionsMiddleware(app)(scope, receive, send)

    worker = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    worker.start()
    worker.join(timeout=BOUND)

    assert not worker.is_alive(), "the event loop spun on the replayed body"
    assert sent == ["http.response.start", *["http.response.body"] * 4]


# --- the stream's polls, with an explicit clock ----------------------------------------------


def _feed_of(team: Team, engine: Engine) -> EventFeed:
    with Session(engine) as session:
        organization = session.scalars(select(Organization).filter_by(name=team.org)).one()
        owner = team.client.get("/user/me", headers=team.headers).json()["id"]
        return EventFeed(owner, organization.id)


needs_concurrent_writers = pytest.mark.skipif(
    not ON_POSTGRES,
    reason="SQLite serializes writers (one write transaction at a time), so ids always "
    "commit in id order there; set HYPERVISOR_TEST_DATABASE_URL=postgresql+psycopg://... "
    "to test commits out of id order",
)


def _two_clusters(team: Team) -> tuple[int, int]:
    other = create_cluster(team.client, team.headers, team.org, gpu=1)["name"]
    return team.deploy(gpu=1)["id"], team.deploy(gpu=1, cluster_name=other)["id"]


@needs_concurrent_writers
def test_a_smaller_id_that_commits_late_is_emitted_first_not_skipped(
    team: Team, engine: Engine
) -> None:
    here, there = _two_clusters(team)
    factory = make_session_factory(engine)
    follower = EventFollower(_feed_of(team, engine), after=page(team)[-1]["id"])

    with factory() as late:  # takes the smaller id, commits last
        record(late, [here], "checkpointed", "late", utcnow())
        with factory.begin() as early:
            record(early, [there], "checkpointed", "early", utcnow())
        assert follower.poll(factory, now=0.0) == []  # the larger id waits behind the gap
        assert follower.poll(factory, now=0.5) == []
        assert follower.wait(now=0.5, interval=0.25) == 0.25
        late.commit()
    emitted = follower.poll(factory, now=0.6)

    assert [(e.deployment_id, e.message) for e in emitted] == [(here, "late"), (there, "early")]
    assert [e.id for e in emitted] == sorted(e.id for e in emitted)
    assert follower.poll(factory, now=5.0) == []


@needs_concurrent_writers
def test_an_id_that_never_commits_is_passed_after_the_wait(team: Team, engine: Engine) -> None:
    here, there = _two_clusters(team)
    factory = make_session_factory(engine)
    follower = EventFollower(_feed_of(team, engine), after=page(team)[-1]["id"])

    with factory() as doomed:
        record(doomed, [here], "checkpointed", "rolled back", utcnow())
        with factory.begin() as committed:
            record(committed, [there], "checkpointed", "kept", utcnow())
        doomed.rollback()
    assert follower.poll(factory, now=0.0) == []
    assert follower.wait(now=0.6, interval=0.25) == pytest.approx(0.15)  # wakes when it ends
    assert follower.poll(factory, now=0.7) == []
    emitted = follower.poll(factory, now=services.events.GAP_WAIT_SECONDS)

    assert [e.message for e in emitted] == ["kept"]


@needs_concurrent_writers
def test_a_poll_reads_one_snapshot_so_an_id_committed_between_its_reads_is_not_lost(
    monkeypatch: pytest.MonkeyPatch, team: Team, engine: Engine
) -> None:
    """A poll reads the feed's events, then checks the ids below them for gaps. Were the
    check to see a commit the first read did not, it would step over that event."""
    here, there = _two_clusters(team)
    factory = make_session_factory(engine)
    follower = EventFollower(_feed_of(team, engine), after=page(team)[-1]["id"])
    check = services.events._committed_run_end

    with factory() as late:
        record(late, [here], "checkpointed", "late", utcnow())
        with factory.begin() as early:
            record(early, [there], "checkpointed", "early", utcnow())

        def commit_late_then_check(*args: Any) -> tuple[int, bool]:
            late.commit()  # lands between the poll's read of the events and its gap check
            return check(*args)

        monkeypatch.setattr(services.events, "_committed_run_end", commit_late_then_check)
        first = follower.poll(factory, now=0.0)
    monkeypatch.setattr(services.events, "_committed_run_end", check)
    second = follower.poll(factory, now=0.1)

    assert first == []
    assert [e.message for e in second] == ["late", "early"]


def test_a_follower_far_behind_catches_up_batch_by_batch_past_other_feeds(
    monkeypatch: pytest.MonkeyPatch, client: TestClient, engine: Engine
) -> None:
    monkeypatch.setattr(services.events, "POLL_BATCH", 3)
    monkeypatch.setattr(services.events, "GAP_CHECK_BATCH", 4)
    ours, theirs = make_team(client), make_team(client)
    for _ in range(4):
        ours.deploy(gpu=1)
        theirs.deploy(gpu=1)
        theirs.deploy(gpu=1)
    factory = make_session_factory(engine)
    follower = EventFollower(_feed_of(ours, engine), after=0)

    emitted: list[int] = []
    polls = 0
    while True:
        emitted += [e.id for e in follower.poll(factory, now=0.0)]
        polls += 1
        if not follower.more:
            break
        assert follower.wait(now=0.0, interval=0.25) == 0.0
        assert polls < 50

    # Within the first poll's wait only checked runs of committed ids are emitted, four ids
    # at a time; all of our events come, in order, none of theirs.
    assert emitted == [e["id"] for e in page(ours)]
    assert polls > 2
    assert follower.poll(factory, now=10.0) == []
    assert follower.position == page(theirs)[-1]["id"]  # it moved on past their ids


# --- two server processes on one database ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """`python main.py` on a port of its own, logging to a file; started at once, ready
    once `wait_ready` returns."""

    def __init__(self, workdir: Path, name: str, database_url: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        env = {
            **os.environ,
            "HYPERVISOR_PORT": str(self.port),
            "HYPERVISOR_DATABASE_URL": database_url,
            "HYPERVISOR_SECRET_KEY": "one-key-for-every-replica-long-enough-for-hs256",
            "HYPERVISOR_RATE_LIMIT": "0",
            "HYPERVISOR_BCRYPT_ROUNDS": "4",
        }
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "main.py")],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> Replica:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.process.kill()
        raise AssertionError(f"{self.log.name} did not start: {self.log.read_text()}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=BOUND)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _database_url(engine: Engine) -> str:
    return TEST_DATABASE_URL if ON_POSTGRES else engine.url.render_as_string(hide_password=False)


def test_a_stream_on_one_replica_sees_what_another_commits_and_ends_on_sigterm(
    tmp_path: Path, engine: Engine
) -> None:
    url = _database_url(engine)
    one, two = Replica(tmp_path, "one", url), Replica(tmp_path, "two", url)
    try:
        one.wait_ready(), two.wait_ready()
        with httpx.Client(base_url=one.url, timeout=BOUND) as api:
            api.post("/user/register", json={"username": "streamer", "password": PASSWORD})
            login = api.post("/user/login", data={"username": "streamer", "password": PASSWORD})
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            api.post("/organization/create", json={"name": "live-org"}, headers=headers)
            cluster = {"name": "gpu-1", "organization_name": "live-org", "total_cpu": 8}
            created = api.post(
                "/cluster/create", json={**cluster, "total_ram": 8, "total_gpu": 2}, headers=headers
            )
            assert created.status_code == 201, created.text
        body = {
            "cluster_name": "gpu-1",
            "organization_name": "live-org",
            "docker_image": "nginx",
            "required_cpu": 1,
            "required_ram": 1,
            "required_gpu": 1,
        }
        path = "/organization/live-org/events"

        with (
            httpx.Client(base_url=one.url, headers=headers, timeout=BOUND) as reader,
            httpx.Client(base_url=two.url, headers=headers, timeout=BOUND) as writer,
            reader.stream("GET", path, headers=SSE) as stream,
        ):
            assert stream.status_code == 200
            submitted = writer.post("/deployment/create", json=body)
            assert submitted.status_code == 201, submitted.text
            deployment = submitted.json()["id"]
            reader = Reader(stream)
            got = reader.events(2, within=3.0)  # a few seconds at most, or fail
            assert [(f["data"]["deployment_id"], f["event"]) for f in got] == [
                (deployment, "created"),
                (deployment, "started"),
            ]
            last_seen = got[-1]["id"]

            # SIGTERM with the stream open: the stream ends and the process exits.
            one.process.send_signal(signal.SIGTERM)
            reader.until_closed()
        assert one.process.wait(timeout=BOUND) in (0, -signal.SIGTERM)
        output = one.log.read_text()
        assert "hypervisor stopped" in output and "Traceback" not in output, output

        # The client reconnects to the other replica where it left off.
        with httpx.Client(base_url=two.url, headers=headers, timeout=BOUND) as client:
            again = client.post("/deployment/create", json=body).json()["id"]
            with client.stream("GET", path, headers={**SSE, "Last-Event-ID": last_seen}) as stream:
                resumed = events_of(stream, 2)
        assert [(f["data"]["deployment_id"], f["event"]) for f in resumed] == [
            (again, "created"),
            (again, "started"),
        ]
        assert two.stop() in (0, -signal.SIGTERM)
    finally:
        one.kill()
        two.kill()
