"""Events: an organization's deployment events as pages, or live as Server-Sent Events."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

import schemas
import services
from routes import INVALID, MEMBER, CurrentUser, OrgName, SessionDep
from schemas import MAX_ID, NAME_PATTERN

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/organization", tags=["events"])

# A stream polls the database this often (each poll a short read-only transaction in a
# worker thread), and writes a comment line when it has been quiet this long, so proxies
# and clients can tell an idle stream from a dead one.
POLL_SECONDS = 0.25
KEEP_ALIVE_SECONDS = 10.0
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

Cursor = Annotated[
    int, Query(ge=0, le=MAX_ID, description="Events after this id (0: from the first)")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Events per page (not for a stream)")]
ClusterFilter = Annotated[
    str | None,
    Query(min_length=3, max_length=63, pattern=NAME_PATTERN, description="Only this cluster's"),
]
DeploymentFilter = Annotated[
    int | None, Query(ge=1, le=MAX_ID, description="Only this deployment's")
]
LastEventId = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=MAX_ID,
        description="A stream resumes after this id (sent by EventSource on reconnect)",
    ),
]
EVENT_STREAM = {
    "content": {
        "text/event-stream": {
            "schema": {"type": "string"},
            "example": 'id: 7\nevent: started\ndata: {"id": 7, "type": "started", ...}\n\n',
        }
    }
}


@router.get(
    "/{org_name}/events",
    summary="Read an organization's events, a page at a time or as a live stream",
    response_model=schemas.EventPage,
    responses={**MEMBER, 200: EVENT_STREAM, 422: INVALID},
)
def read_events(
    org_name: OrgName,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    after: Cursor = 0,
    limit: Limit = 100,
    cluster_name: ClusterFilter = None,
    deployment_id: DeploymentFilter = None,
    last_event_id: LastEventId = None,
) -> schemas.EventPage | StreamingResponse:
    """Every deployment event of the organization, in id order, to any member; optionally
    only one cluster's or one deployment's. `next_after` is the cursor for the next page.

    With `Accept: text/event-stream` the same events stream live as Server-Sent Events
    (`id`, `event` = type, `data` = the event), from `Last-Event-ID` if sent, else `after`,
    each within a second of its commit, whichever replica it was committed on; `limit`
    does not apply. A comment line is sent when the stream has been idle for 10 s."""
    feed = services.event_feed(session, user, org_name, cluster_name, deployment_id)
    if not wants_event_stream(request.headers.get("accept", "")):
        return services.read_events(session, feed, after, limit)
    start = last_event_id if last_event_id is not None else after
    follower = services.EventFollower(feed, start)
    stream = event_stream(request.app, follower)
    return StreamingResponse(stream, media_type="text/event-stream", headers=STREAM_HEADERS)


def wants_event_stream(accept: str) -> bool:
    """True when the Accept header lists text/event-stream (with a quality above 0)."""
    for item in accept.split(","):
        media_type, *parameters = (part.strip().lower() for part in item.split(";"))
        if media_type != "text/event-stream":
            continue
        quality = next((p[2:] for p in parameters if p.startswith("q=")), "1")
        try:
            return float(quality) > 0
        except ValueError:
            return True
    return False


def stop_streams(app: Starlette) -> None:
    """End the app's live event streams at their next tick: on shutdown, since a server
    waits for open responses to finish before it shuts the app down."""
    _stopping(app).set()


def reopen_streams(app: Starlette) -> None:
    """Let streams run again (the app is starting, perhaps not for the first time)."""
    _stopping(app).clear()


def _stopping(app: Starlette) -> threading.Event:
    if not hasattr(app.state, "event_streams_stopping"):
        app.state.event_streams_stopping = threading.Event()
    stopping: threading.Event = app.state.event_streams_stopping
    return stopping


async def event_stream(app: Starlette, follower: services.EventFollower) -> AsyncIterator[str]:
    """A follower's events as Server-Sent Events (the dashboard's stream uses it too).

    Poll, emit, wait; until the client goes (the response is then cancelled), the reader is
    no longer a member, or the app stops. Polls run in worker threads."""
    session_factory = app.state.session_factory
    stopping = _stopping(app)
    quiet_since = time.monotonic()
    while not stopping.is_set():
        try:
            events = await run_in_threadpool(follower.poll, session_factory, time.monotonic())
        except services.StreamEnded:
            return
        except Exception:  # noqa: BLE001 - the client reconnects with Last-Event-ID
            logger.warning("event stream poll failed; stream closed", exc_info=True)
            return
        now = time.monotonic()
        if events:
            yield "".join(_frame(event) for event in events)
            quiet_since = now
        elif now - quiet_since >= KEEP_ALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet_since = now
        await asyncio.sleep(follower.wait(now, POLL_SECONDS))


def _frame(event: schemas.EventRead) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"
