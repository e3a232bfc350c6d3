"""The geometry of a cluster's timeline: one row per deployment, one bar per run, a mark
where a run was preempted, and a time axis, in the SVG's own units (the template draws it).

Two layouts of the same runs: `WIDE` (labels in a column on the left) for a laptop, and
`COMPACT` (each label above its row, a narrower drawing) for a phone, where the wide one
would shrink its text below reading size; the stylesheet shows one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.dashboard import Timeline

BAR_HEIGHT = 14
AXIS_HEIGHT = 26


@dataclass(frozen=True)
class Layout:
    width: int
    label_width: int  # 0: each label is drawn above its bar instead
    row_height: int
    ticks: int  # about this many ticks on the time axis


WIDE = Layout(width=1000, label_width=170, row_height=24, ticks=6)
COMPACT = Layout(width=400, label_width=0, row_height=36, ticks=3)
WIDTH, LABEL_WIDTH = WIDE.width, WIDE.label_width
# A short window is drawn at least this wide, so a few seconds of runs still read as bars.
MIN_SPAN_SECONDS = 10.0
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


@dataclass(frozen=True)
class Row:
    y: float  # the top of the row; its label's baseline is `label_y`
    label_y: float
    deployment_id: int
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    outcome: str
    title: str


@dataclass(frozen=True)
class Mark:
    """A preemption: where the preempted run ended."""

    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class TimelineDrawing:
    width: int
    height: int
    label_width: int
    rows: list[Row]
    bars: list[Bar]
    marks: list[Mark]
    ticks: list[Tick]
    now_x: float


def draw(timeline: Timeline, layout: Layout = WIDE) -> TimelineDrawing:
    """Where everything of the timeline goes, the latest moment (now) at the right edge."""
    end = timeline.end
    span = max((end - timeline.start).total_seconds(), MIN_SPAN_SECONDS)
    start = end - timedelta(seconds=span)
    left_edge = layout.label_width or 4
    plot = layout.width - left_edge - 30  # room for the last tick's label

    def x_of(moment: datetime) -> float:
        seconds = (moment - start).total_seconds()
        return round(left_edge + plot * min(max(seconds / span, 0.0), 1.0), 1)

    above = layout.label_width == 0
    height_of_row = layout.row_height
    bar_offset = height_of_row - BAR_HEIGHT - 4 if above else (height_of_row - BAR_HEIGHT) / 2
    names = {run.deployment_id: run for run in timeline.runs}
    rows = [
        Row(
            y=index * height_of_row,
            label_y=index * height_of_row + (12 if above else 16),
            deployment_id=deployment_id,
            label=_label(deployment_id, names[deployment_id].name, names[deployment_id].priority),
        )
        for index, deployment_id in enumerate(timeline.deployment_ids())
    ]
    y_of = {row.deployment_id: row.y + bar_offset for row in rows}
    bars: list[Bar] = []
    marks: list[Mark] = []
    for run in timeline.runs:
        left = x_of(run.started_at)
        right = x_of(run.ended_at or end)
        ended = "still running" if run.ended_at is None else f"{run.outcome}: {run.message}"
        title = f"#{run.deployment_id} from {_clock(run.started_at)}: {ended}"
        y = y_of[run.deployment_id]
        bars.append(Bar(left, y, max(right - left, 2.0), run.outcome, title))
        if run.outcome == "preempted":
            marks.append(Mark(right, y + BAR_HEIGHT / 2, f"#{run.deployment_id} {run.message}"))
    height = len(rows) * height_of_row + AXIS_HEIGHT
    # A label centred on a tick near an edge would be cut off: those go unlabelled.
    ticks = [
        Tick(x, label if 25 <= x <= layout.width - 30 else "")
        for x, label in (
            (x_of(moment), label) for moment, label in _ticks(start, end, span, layout.ticks)
        )
    ]
    return TimelineDrawing(
        layout.width, height, layout.label_width, rows, bars, marks, ticks, x_of(end)
    )


def _label(deployment_id: int, name: str | None, priority: int) -> str:
    text = f"#{deployment_id} {name}" if name else f"#{deployment_id}"
    if len(text) > 20:
        text = text[:19] + "…"
    return f"{text} · p{priority}"


def _ticks(start: datetime, end: datetime, span: float, count: int) -> list[tuple[datetime, str]]:
    """Round moments about every `count`th of the span, labelled in UTC."""
    step = next((s for s in TICK_STEPS if span / s <= count), TICK_STEPS[-1])
    first = datetime.fromtimestamp(-(-start.timestamp() // step) * step, UTC)
    ticks = []
    moment = first
    while moment <= end:
        ticks.append((moment, _clock(moment) if step < 60 else moment.strftime("%H:%M")))
        moment += timedelta(seconds=step)
    return ticks


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M:%S")
