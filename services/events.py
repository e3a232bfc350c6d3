"""An organization's event feed (SPEC §4 "Events"): pages in id order, and the polls of a
live stream, which keep id order even where transactions commit out of it.

An event's id is taken when it is inserted, but it becomes visible when its transaction
commits. On PostgreSQL two transactions (say, passes over two clusters) can commit out of
id order, so a reader that moved its cursor past a smaller id that was not committed yet
would never see that event. A stream (`EventFollower`) therefore emits only the run of ids
after its position that are all committed, and gives a missing id `GAP_WAIT_SECONDS`, from
the first poll that saw a larger id, before passing it: the missing id may be a transaction
about to commit, or an insert that rolled back and will never appear. On SQLite writers
take turns, so ids always commit in order and nothing ever waits.

A page (`read_events`) is a plain read of what is committed: a client that pages at the
head of the feed may step past an id committed a moment later; the stream does not.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session, sessionmaker

import schemas
from database import read_snapshot
from models import Cluster, DeploymentEvent, Role, User
from services.access import cluster_in, deployment_in, membership_of, organization_as_member

# How long a stream waits for a missing id to commit before passing it. Between 0.25 s
# polls, an event behind a rolled-back id still arrives within a second of its commit.
GAP_WAIT_SECONDS = 0.75
# Events of the feed one poll reads at most, and ids it checks for gaps at most: a stream
# resuming far back catches up batch by batch, each poll costing the same.
POLL_BATCH = 500
GAP_CHECK_BATCH = 5_000


@dataclass(frozen=True)
class EventFeed:
    """Which events a reader follows: an organization's, or only one cluster's or one
    deployment's (already checked to be the organization's)."""

    user_id: int
    organization_id: int
    cluster_id: int | None = None
    deployment_id: int | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The narrowest indexed condition: each of the three has an index ending in id."""
        if self.deployment_id is not None:
            narrowest = [DeploymentEvent.deployment_id == self.deployment_id]
            if self.cluster_id is not None:
                narrowest.append(DeploymentEvent.cluster_id == self.cluster_id)
            return narrowest
        if self.cluster_id is not None:
            return [DeploymentEvent.cluster_id == self.cluster_id]
        return [DeploymentEvent.organization_id == self.organization_id]


def event_feed(
    session: Session,
    user: User,
    org_name: str,
    cluster_name: str | None = None,
    deployment_id: int | None = None,
) -> EventFeed:
    """The feed the caller asks for, once they may read it (any member): an unknown cluster
    or a deployment outside the organization is NotFound, like the organization itself."""
    organization, _ = organization_as_member(session, user, org_name, Role.viewer)
    cluster_id = cluster_in(session, organization, cluster_name).id if cluster_name else None
    if deployment_id is not None:
        deployment_in(session, organization, deployment_id)
    return EventFeed(user.id, organization.id, cluster_id, deployment_id)


def read_events(session: Session, feed: EventFeed, after: int, limit: int) -> schemas.EventPage:
    """Up to `limit` events of the feed after id `after`, in id order; `next_after` is the
    last id returned, else `after`, so it can always be passed back."""
    events = [_event(row) for row in session.execute(_events_after(feed, after, limit))]
    return schemas.EventPage(events=events, next_after=events[-1].id if events else after)


def _events_after(
    feed: EventFeed, after: int, limit: int
) -> Select[int, datetime, int, str, str, str]:
    # One index range (the feed's condition, then id), one cluster row per event: O(limit).
    return (
        select(
            DeploymentEvent.id,
            DeploymentEvent.at,
            DeploymentEvent.deployment_id,
            Cluster.name.label("cluster_name"),
            DeploymentEvent.type,
            DeploymentEvent.message,
        )
        .join(Cluster, Cluster.id == DeploymentEvent.cluster_id)
        .where(*feed.conditions(), DeploymentEvent.id > after)
        .order_by(DeploymentEvent.id)
        .limit(limit)
    )


def _event(row: Any) -> schemas.EventRead:
    return schemas.EventRead.model_validate(row._mapping)


class EventFollower:
    """Where one live stream is in its feed. Each `poll` reads in a short transaction of its
    own, so nothing is held while the stream waits between polls.

    `position` only grows: every id up to it was emitted, belongs to another feed, or was
    given up on after `gap_wait` seconds. `now` is a monotonic time in seconds, passed in so
    that the waits can be tested without sleeping.
    """

    def __init__(self, feed: EventFeed, after: int, gap_wait: float = GAP_WAIT_SECONDS) -> None:
        self.feed = feed
        self.position = after
        self.gap_wait = gap_wait
        # Poll again at once: the last poll stopped at the end of a batch.
        self.more = False
        # Events of the feed are committed past a missing id that is still given its wait.
        self.held = False
        # When each larger largest-committed-id was first seen; every id up to `settled` is
        # committed, or was missing for `gap_wait` seconds after a larger one was seen.
        self._heads: deque[tuple[float, int]] = deque()
        self._head = 0
        self._settled = 0

    def poll(self, session_factory: sessionmaker[Session], now: float) -> list[schemas.EventRead]:
        """The events that may be emitted now, in id order; `StreamEnded` once the caller
        is no longer a member of the organization."""
        with session_factory.begin() as session:
            read_snapshot(session)  # the head, the events and the gap check agree
            if membership_of(session, self.feed.user_id, self.feed.organization_id) is None:
                raise StreamEnded("no longer a member of the organization")
            return self._read(session, now)

    def wait(self, now: float, interval: float) -> float:
        """Seconds to wait before the next poll: none after a full batch, else `interval`,
        or less when a missing id's wait ends sooner."""
        if self.more:
            return 0.0
        if self.held and self._heads:
            return max(0.0, min(interval, self._heads[0][0] + self.gap_wait - now))
        return interval

    def _read(self, session: Session, now: float) -> list[schemas.EventRead]:
        head = session.scalar(select(func.max(DeploymentEvent.id))) or 0
        if head > self._head:
            self._heads.append((now, head))
            self._head = head
        while self._heads and self._heads[0][0] + self.gap_wait <= now:
            self._settled = self._heads.popleft()[1]
        self.more = self.held = False
        if head <= self.position:
            return []
        statement = _events_after(self.feed, self.position, POLL_BATCH)
        events = [_event(row) for row in session.execute(statement)]
        ready = [event for event in events if event.id <= self._settled]
        if len(ready) < len(events):
            # Past the settled ids, only the run of committed ids after the position counts.
            run_end, cut = _committed_run_end(
                session, max(self.position, self._settled), events[-1].id
            )
            ready.extend(event for event in events[len(ready) :] if event.id <= run_end)
            self.position = max(self.position, run_end)
            self.held = len(ready) < len(events) and not cut
            self.more = cut
        elif len(events) < POLL_BATCH:
            # Every committed event of the feed is out: the settled ids up to here are other
            # feeds' or given up on, so the next gap check can start above them.
            self.position = max(self.position, self._settled)
        else:
            self.more = True
        if ready:
            self.position = max(self.position, ready[-1].id)
        return ready


class StreamEnded(Exception):
    """The stream's reader may no longer read its feed."""


def _committed_run_end(session: Session, low: int, high: int) -> tuple[int, bool]:
    """The largest id x in [low, high] such that every id in (low, x] is committed, and
    whether the check stopped at `GAP_CHECK_BATCH` ids before reaching a gap or `high`."""
    ids = session.scalars(
        select(DeploymentEvent.id)
        .where(DeploymentEvent.id > low, DeploymentEvent.id <= high)
        .order_by(DeploymentEvent.id)
        .limit(GAP_CHECK_BATCH)
    ).all()
    end = low
    for event_id in ids:
        if event_id != end + 1:
            return end, False
        end = event_id
    return end, len(ids) == GAP_CHECK_BATCH and end < high
