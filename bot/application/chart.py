"""The RCA's timeline chart (the incident's phases and each step's duration) and a drill
report's trend chart (a target's times to recover over its last drills and real rollbacks),
as PNGs.

People read a picture at a glance: one horizontal bar per recovery phase
(detect, decide, approve, recover: `bot.domain.recovery`) on a time axis counted from
the first detection, then one bar per step of each run, from its recorded start
to its end, coloured by how it ended. Everything comes from the audit log, like
the template it is uploaded with.

matplotlib is imported where the chart is drawn, not at module import, so the
command line and the bot start fast; it draws with the Agg canvas (no display,
no pyplot state shared between threads). `timeline_chart` returns the ordered
rows it drew with the bytes, so what the picture says can be checked.

The trend chart draws one line per series it is given, oldest first, and the RTO as a dashed
line; the PNG's Description says which series it holds and how many points each has, so
what was uploaded can be read back.

It reads the records as `bot.domain.records` describes them; matplotlib draws.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.domain.records import EventRecord as Event
from bot.domain.records import IncidentRecord as Incident
from bot.domain.records import RunRecord as Run
from bot.domain.recovery import PHASE_WORDS, recovery

STEP_END = {
    "step.succeeded": "succeeded",
    "step.skipped": "skipped",
    "step.failed": "failed",
    "step.interrupted": "interrupted",
}
COLOURS = {
    "detect": "#9e9e9e",
    "decide": "#ffb300",
    "approve": "#1e88e5",
    "recover": "#43a047",
    "succeeded": "#66bb6a",
    "skipped": "#bdbdbd",
    "failed": "#e53935",
    "interrupted": "#8e24aa",
}


@dataclass(frozen=True)
class Bar:
    """One row of the chart: a label, where it starts and how long it lasts (seconds)."""

    label: str
    start: float
    seconds: float
    kind: str


@dataclass(frozen=True)
class Chart:
    """The PNG and the rows it draws, top to bottom."""

    png: bytes
    phases: tuple[str, ...]
    steps: tuple[str, ...]
    bars: tuple[Bar, ...]


def chart_filename(incident_id: str) -> str:
    """The name the chart is uploaded under, next to the RCA template."""
    return f"{incident_id}-timeline.png"


def step_spans(
    runs: Sequence[Run], events: Sequence[Event]
) -> list[tuple[str, datetime, datetime, str]]:
    """(label, start, end, how it ended) of every finished step, in the order they started."""
    words = {
        (run.id, int(s["position"])): str(s.get("label") or s["name"])
        for run in runs
        for s in run.plan
    }
    started: dict[tuple[str | None, int], datetime] = {}
    spans = []
    for event in events:
        position = event.detail.get("position")
        if not isinstance(position, int):
            continue
        key = (event.run_id, position)
        if event.kind == "step.running":
            started.setdefault(key, event.at)
        elif event.kind in STEP_END and key in started:
            label = words.get((event.run_id or "", position), str(event.detail.get("name")))
            spans.append(
                (f"{position + 1}. {label}", started.pop(key), event.at, STEP_END[event.kind])
            )
    return sorted(spans, key=lambda s: s[1])


def bars(incident: Incident, runs: Sequence[Run], events: Sequence[Event]) -> list[Bar]:
    """The chart's rows: the phases reached, then the steps, seconds from first detection."""
    rec = recovery(incident, events)
    origin = rec.phases[0].start or incident.created_at
    rows = [
        Bar(PHASE_WORDS[p.name], (p.start - origin).total_seconds(), p.seconds, p.name)
        for p in rec.phases
        if p.start is not None and p.seconds is not None
    ]
    rows += [
        Bar(label, (start - origin).total_seconds(), (end - start).total_seconds(), kind)
        for label, start, end, kind in step_spans(runs, events)
    ]
    return rows


def timeline_chart(incident: Incident, runs: Sequence[Run], events: Sequence[Event]) -> Chart:
    """Draw the incident's phases and steps as a PNG."""
    rows = bars(incident, runs, events)
    png = _draw(f"{incident.id}: {incident.target} in {incident.environment}", rows)
    phase_names = tuple(r.kind for r in rows if r.kind in PHASE_WORDS)
    steps = tuple(r.label for r in rows if r.kind not in PHASE_WORDS)
    return Chart(png=png, phases=phase_names, steps=steps, bars=tuple(rows))


def _draw(title: str, rows: list[Bar]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height = 1.2 + 0.32 * max(len(rows), 1)
    figure = Figure(figsize=(9, height), dpi=100)
    FigureCanvasAgg(figure)
    axes: Any = figure.add_subplot(1, 1, 1)
    # a zero-length bar is still seen: at least 0.5 % of the axis
    span = max((r.start + r.seconds for r in rows), default=1.0) or 1.0
    for index, row in enumerate(rows):
        width = max(row.seconds, span * 0.005)
        axes.broken_barh(
            [(row.start, width)], (index - 0.4, 0.8), facecolors=COLOURS.get(row.kind, "#607d8b")
        )
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels([_cut(r.label) for r in rows], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the issue was first detected")
    axes.set_title(title, fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


@dataclass(frozen=True)
class TrendChart:
    """The PNG and the series it draws: (name, number of points)."""

    png: bytes
    series: tuple[tuple[str, int], ...]


def trend_filename(incident_id: str) -> str:
    """The name a drill's trend chart is uploaded under."""
    return f"{incident_id}-trend.png"


def describe_series(series: tuple[tuple[str, int], ...]) -> str:
    """The PNG's Description: `series: <name> (<points>); …`."""
    return "series: " + "; ".join(f"{name} ({count})" for name, count in series)


def trend_chart(
    title: str, series: list[tuple[str, tuple[float, ...]]], *, rto: float | None = None
) -> TrendChart:
    """Draw each non-empty series of seconds, oldest first, as a line of points in minutes;
    the RTO, when given, as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = [(name, values) for name, values in series if values]
    figure = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes: Any = figure.add_subplot(1, 1, 1)
    for name, values in drawn:
        axes.plot(range(1, len(values) + 1), [v / 60 for v in values], marker="o", label=name)
    if rto is not None:
        axes.axhline(rto / 60, color=COLOURS["failed"], linestyle="--", label="RTO")
    axes.set_xlabel("oldest to newest")
    axes.set_ylabel("minutes")
    axes.set_ylim(bottom=0)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if drawn or rto is not None:
        axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    counted = tuple((name, len(values)) for name, values in drawn)
    out = io.BytesIO()
    figure.savefig(out, format="png", metadata={"Description": describe_series(counted)})
    return TrendChart(png=out.getvalue(), series=counted)


def _cut(label: str, limit: int = 48) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
