"""What `hv` shows people: rich tables of the API's JSON, times as "in 4m 10s", and the
same JSON untouched for scripts (`-o json`). Pure functions of the data and a `now`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

Json = Mapping[str, Any]
DASH = "-"
STATUS_STYLE = {
    "running": "green",
    "pending": "yellow",
    "completed": "blue",
    "failed": "red",
    "cancelled": "magenta",
}


def write_json(data: Any) -> None:
    """The API's JSON as it came, indented, on standard output."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def write_json_line(data: Any) -> None:
    """One JSON object per line, for streams (`--follow`, `--wait`): JSON Lines."""
    sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def span(seconds: float) -> str:
    """A length of time in its two largest units: 45s, 3m 05s, 2h 10m, 3d 04h."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def relative(value: str | None, now: datetime) -> str:
    """ "in 4m 10s", "now" or "3m ago"; a dash when there is no time."""
    moment = parse_time(value)
    if moment is None:
        return DASH
    delta = (moment - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(-delta)} ago"


def timestamp(value: str | None) -> str:
    """An API time for reading: `2026-12-01 09:20:30` (UTC, as the API gives it)."""
    moment = parse_time(value)
    if moment is None:
        return DASH
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def estimate(start: str | None, basis: str | None, now: datetime) -> str:
    """An estimated start: "in 4m 10s", "~in 4m 10s" when it rests on past run times,
    "unknown" when the forecast cannot say."""
    if basis == "unknown":
        return "unknown"
    if start is None:
        return DASH
    shown = relative(start, now)
    if shown.endswith("ago"):
        shown = "now"  # a start the loop has not caught up with yet
    return f"~{shown}" if basis == "history" else shown


def status(value: str) -> Text:
    return Text(value, style=STATUS_STYLE.get(value, ""))


def resources(cpu: int, ram: int, gpu: int) -> str:
    return f"{cpu}/{ram}/{gpu}"


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def queue_table(queue: Json, now: datetime, title: str | None = None) -> Table:
    """A cluster's queue in scheduling order: the columns of SPEC §8."""
    table = _table(title=title)
    for column in ("POS", "ID", "NAME", "PRI", "WAITING"):
        table.add_column(column, no_wrap=column != "NAME", overflow="fold")
    table.add_column("REASON", overflow="fold")
    table.add_column("EST. START", no_wrap=True)
    for entry in queue["queue"]:
        reason = entry["reason"] if entry["eligible"] else f"(not eligible) {entry['reason']}"
        table.add_row(
            str(entry["position"]),
            str(entry["deployment_id"]),
            entry["name"] or DASH,
            str(entry["priority"]),
            span(entry["waiting_seconds"]),
            reason,
            estimate(entry["estimated_start_at"], entry["estimate_basis"], now),
        )
    return table


def queue_title(queue: Json, now: datetime | None = None) -> str:
    total = queue["total"]
    title = f"{queue['cluster_name']}: {total} pending"
    if now is not None:
        title += f", as of {now.astimezone(UTC).strftime('%H:%M:%S')} UTC"
    return title


def _state(deployment: Json, now: datetime) -> str:
    """Why it waits, or how long it has run or since it ended."""
    if deployment["status"] == "running":
        return f"started {relative(deployment['started_at'], now)}"
    if deployment["status"] == "pending":
        position = deployment["queue_position"]
        prefix = f"#{position} " if position is not None else ""
        return prefix + (deployment["reason"] or "")
    ended = f"ended {relative(deployment['finished_at'], now)}"
    return f"{ended}: {deployment['reason']}" if deployment["reason"] else ended


def deployments_table(deployments: Iterable[Json], now: datetime) -> Table:
    """Short columns kept whole; the image and the state (a reason) wrap to fit. The
    cluster is a column only when there are several."""
    deployments = list(deployments)
    several = len({d["cluster_name"] for d in deployments}) > 1
    table = _table()
    for column in ("ID", "NAME", *(("CLUSTER",) if several else ()), "STATUS", "PRI"):
        table.add_column(column, no_wrap=True)
    table.add_column("CPU/RAM/GPU", no_wrap=True)
    table.add_column("IMAGE", overflow="fold")
    table.add_column("STATE", overflow="fold")
    for d in deployments:
        table.add_row(
            str(d["id"]),
            d["name"] or DASH,
            *((d["cluster_name"],) if several else ()),
            status(d["status"]),
            str(d["priority"]),
            resources(d["required_cpu"], d["required_ram"], d["required_gpu"]),
            d["docker_image"],
            _state(d, now),
        )
    return table


def deployment_detail(d: Json, now: datetime) -> RenderableType:
    """One deployment, field by field, then its events."""
    fields = _table("FIELD", "VALUE")
    fields.show_header = False
    rows: list[tuple[str, str | Text]] = [
        ("id", str(d["id"])),
        ("name", d["name"] or DASH),
        ("cluster", f"{d['cluster_name']} ({d['organization_name']})"),
        ("image", d["docker_image"]),
        ("status", status(d["status"])),
        ("cpu/ram/gpu", resources(d["required_cpu"], d["required_ram"], d["required_gpu"])),
        ("priority", str(d["priority"])),
    ]
    if d["reason"]:
        rows.append(("reason", d["reason"]))
    if d["queue_position"] is not None:
        rows.append(("queue position", str(d["queue_position"])))
    if d["depends_on"]:
        rows.append(("depends on", ", ".join(str(i) for i in d["depends_on"])))
    if d["duration_seconds"] is not None:
        saved = f", {span(d['saved_seconds'])} saved" if d["saved_seconds"] else ""
        rows.append(("duration", span(d["duration_seconds"]) + saved))
    if d["preemption_count"]:
        rows.append(("preempted", f"{d['preemption_count']} times"))
    if d["status"] == "pending":
        start = estimate(d["estimated_start_at"], d["estimate_basis"], now)
        rows.append(("estimated start", start))
    if d["estimated_end_at"] is not None:
        rows.append(("estimated end", relative(d["estimated_end_at"], now)))
    rows += [
        ("created", f"{timestamp(d['created_at'])} by {d['created_by']}"),
        ("started", timestamp(d["started_at"])),
        ("finished", timestamp(d["finished_at"])),
    ]
    for name, value in rows:
        fields.add_row(Text(name, style="bold"), value)
    events = _table("AT", "EVENT", "MESSAGE", title="events")
    for event in d.get("events", []):
        events.add_row(timestamp(event["at"]), event["type"], event["message"])
    return Group(fields, Text(""), events)


def created_summary(d: Json, now: datetime) -> str:
    """What a create did, in a sentence."""
    name = f" ({d['name']})" if d["name"] else ""
    head = f"deployment {d['id']}{name} on {d['cluster_name']}"
    if d["status"] == "running":
        return f"{head} is running"
    if d["status"] == "pending":
        position = d["queue_position"]
        text = f"{head} is pending at position {position}: {d['reason']}"
        return text + _estimated(d["estimated_start_at"], d["estimate_basis"], now)
    return f"{head} is {d['status']}: {d['reason']}"


def preview_summary(p: Json, now: datetime) -> str:
    """What a create would do, in a sentence."""
    preempt = p["would_preempt"]
    if p["would_start"]:
        text = "would start now"
        if preempt:
            text += ", preempting " + ", ".join(str(i) for i in preempt)
        return text
    text = f"would wait at position {p['queue_position']}: {p['reason']}"
    return text + _estimated(p["estimated_start_at"], p["estimate_basis"], now)


def _estimated(start: str | None, basis: str | None, now: datetime) -> str:
    """ "; estimated start: in 4m 10s", or nothing before the forecast has run."""
    shown = estimate(start, basis, now)
    return "" if shown == DASH else f"; estimated start: {shown}"


def clusters_table(clusters: Iterable[Json]) -> Table:
    """Per resource: allocated/total, and what of it is reserved."""
    table = _table("NAME", "CPU", "RAM", "GPU", "RESERVED", "RUNNING", "PENDING")
    for c in clusters:
        table.add_row(
            c["name"],
            f"{c['allocated_cpu']}/{c['total_cpu']}",
            f"{c['allocated_ram']}/{c['total_ram']}",
            f"{c['allocated_gpu']}/{c['total_gpu']}",
            resources(c["reserved_cpu"], c["reserved_ram"], c["reserved_gpu"]),
            str(c["running"]),
            str(c["pending"]),
        )
    return table


def cluster_summary(c: Json) -> str:
    return (
        f"cluster {c['name']} ({c['organization_name']}): "
        f"cpu {c['allocated_cpu']}/{c['total_cpu']}, ram {c['allocated_ram']}/{c['total_ram']}, "
        f"gpu {c['allocated_gpu']}/{c['total_gpu']} allocated "
        f"({resources(c['reserved_cpu'], c['reserved_ram'], c['reserved_gpu'])} reserved)"
    )


def organizations_table(organizations: Iterable[Json]) -> Table:
    table = _table("ORGANIZATION", "ROLE")
    for o in organizations:
        table.add_row(o["name"], o["role"])
    return table


def members_table(members: Iterable[Json]) -> Table:
    table = _table("USERNAME", "ROLE", "JOINED")
    for m in members:
        table.add_row(m["username"], m["role"], timestamp(m["joined_at"]))
    return table


def events_table(events: Iterable[Json]) -> Table:
    table = _table("ID", "AT", "DEPLOYMENT", "CLUSTER", "EVENT", "MESSAGE")
    for e in events:
        table.add_row(
            str(e["id"]),
            timestamp(e["at"]),
            str(e["deployment_id"]),
            e["cluster_name"],
            e["type"],
            e["message"],
        )
    return table


def event_line(event: Json) -> str:
    """One event as a line of a followed stream."""
    return (
        f"{timestamp(event['at'])}  {event['cluster_name']}  deployment {event['deployment_id']}"
        f"  {event['type']}: {event['message']}"
    )
