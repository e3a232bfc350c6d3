"""What `hv` follows as it happens, all driven by the organization's event stream:
`hv events ORG [--follow]`, `hv queue CLUSTER --watch` and `hv run --wait`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from cli import render
from cli.client import Api
from cli.common import Format, OutputOption, connect, console, now, say

PAGE = 1000
# A burst of events (a preemption writes several) is one redraw: wait this long after the
# first one for the rest.
DEBOUNCE_SECONDS = 0.2
# Redraw at least this often even when nothing happens, so "waiting" keeps counting.
REFRESH_SECONDS = 5.0
STARTED = "started"
ENDED = ("completed", "failed", "cancelled")


def follow_deployment(
    api: Api, deployment: dict[str, Any], *, until_done: bool, output: Format
) -> str | None:
    """Print the deployment's events, from its first, until it starts (or, `until_done`,
    ends); the type of the event that ended the wait ("started", "completed", ...)."""
    for event in api.events(deployment["organization_name"], deployment_id=deployment["id"]):
        if output is Format.json:
            render.write_json_line(event)
        else:
            say(render.event_line(event))
        if event["type"] in ENDED or (event["type"] == STARTED and not until_done):
            return str(event["type"])
    return None  # pragma: no cover - the stream reconnects; it never ends by itself


class _Changes:
    """Set by the stream's thread on every event of the cluster; read by the redraws."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.failure: BaseException | None = None

    def follow(self, api: Api, org: str, cluster: str) -> None:
        try:
            for _ in api.events(org, cluster_name=cluster):
                self.event.set()
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self.failure = error
            self.event.set()


def watch_queue(
    api: Api,
    org: str,
    cluster: str,
    first: dict[str, Any],
    reload: Callable[[], dict[str, Any]],
    output: Format,
) -> None:
    """Show `first`, then `reload()` and redraw in place on each change of the cluster in
    the event stream, until Ctrl-C (exit 0).

    The stream starts at the cluster's first event: the history replays as one burst of
    changes (one redraw), since the API has no "from now" cursor."""
    from rich.live import Live  # only a watch needs it: every other command starts faster

    changes = _Changes()
    # A thread of its own reads the stream, so a redraw never waits on the network; a
    # daemon, so Ctrl-C ends the process without waiting for it.
    threading.Thread(
        target=changes.follow, args=(api, org, cluster), daemon=True, name="hv-events"
    ).start()

    def draw(queue: dict[str, Any]) -> Any:
        moment = now()
        return render.queue_table(queue, moment, title=render.queue_title(queue, moment))

    def next_queue() -> dict[str, Any]:
        if changes.event.wait(REFRESH_SECONDS):
            time.sleep(DEBOUNCE_SECONDS)
            changes.event.clear()
        if changes.failure is not None:
            raise changes.failure
        return reload()

    try:
        if output is Format.json:
            render.write_json_line(first)
            while True:
                render.write_json_line(next_queue())
        elif not console.is_terminal:
            # Not a terminal: nothing to redraw in place; each state follows the last.
            console.print(draw(first))
            while True:
                console.print(draw(next_queue()))
        else:
            # Live rewrites only the lines that changed, in place: no clearing, no flicker.
            with Live(draw(first), console=console, auto_refresh=False) as screen:
                while True:
                    screen.update(draw(next_queue()), refresh=True)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends


def events(
    org: Annotated[str, typer.Argument(help="Organization name", show_default=False)],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events, until Ctrl-C")
    ] = False,
    cluster: Annotated[
        str | None, typer.Option(help="Only this cluster's events", show_default=False)
    ] = None,
    deployment: Annotated[
        int | None, typer.Option(min=1, help="Only this deployment's events", show_default=False)
    ] = None,
    after: Annotated[int, typer.Option(min=0, help="Only events after this event id")] = 0,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="At most this many (without --follow)", show_default="all"),
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """An organization's deployment events, oldest first; --follow streams new ones live."""
    if follow and limit is not None:
        raise typer.BadParameter("--limit is for a listing; --follow runs until Ctrl-C")
    filters = {"cluster_name": cluster, "deployment_id": deployment}
    with connect() as api:
        if follow:
            try:
                for event in api.events(org, after=after, **filters):
                    if output is Format.json:
                        render.write_json_line(event)
                    else:
                        say(render.event_line(event))
            except KeyboardInterrupt:
                pass  # Ctrl-C is how a follow ends
            return
        found: list[Any] = []
        cursor = after
        while limit is None or len(found) < limit:
            size = PAGE if limit is None else min(PAGE, limit - len(found))
            path = f"/organization/{org}/events"
            page = api.get(path, after=cursor, limit=size, **filters)
            found.extend(page["events"])
            if len(page["events"]) < size:
                break
            cursor = page["next_after"]
    if output is Format.json:
        render.write_json({"events": found, "next_after": found[-1]["id"] if found else after})
    else:
        console.print(render.events_table(found))
