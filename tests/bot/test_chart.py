"""The RCA's timeline chart is a valid PNG of the incident's phases, in order, and its steps."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import timedelta

from bot.application.chart import chart_filename, timeline_chart
from bot.persistence.models import Incident, Run
from bot.persistence.store import Store
from tests.fakes.config import BOB, Clock

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLAN = [
    {"position": 0, "name": "kubernetes.rollout_undo", "label": "Roll back app to rev 2"},
    {"position": 1, "name": "http.health", "label": "Health"},
]


def recorded_incident(store: Store, clock: Clock) -> tuple[Incident, list[Run]]:
    incident = store.incidents.create(
        environment="prod",
        target="app",
        severity="high",
        source="slack",
        opened_by="UALICE0001",
        detected_at=clock.now - timedelta(seconds=20),
    )
    run = Run(id="r1", incident_id=incident.id, plan=PLAN)
    moves = [
        (10, "run.requested", {}),
        (30, "run.approved", {}),
        (2, "run.started", {}),
        (0, "step.running", {"position": 0, "name": "kubernetes.rollout_undo"}),
        (12, "step.succeeded", {"position": 0, "name": "kubernetes.rollout_undo"}),
        (0, "step.running", {"position": 1, "name": "http.health"}),
        (6, "step.succeeded", {"position": 1, "name": "http.health"}),
        (1, "run.succeeded", {}),
    ]
    for seconds, kind, detail in moves:
        clock.advance(seconds=seconds)
        store.events.add(incident_id=incident.id, kind=kind, actor=BOB, run_id="r1", detail=detail)
    return incident, [run]


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, at = [], 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + data) == crc, kind
        chunks.append((kind, data))
        at += 12 + length
    return chunks


def test_the_chart_is_a_valid_png_with_the_phases_in_order(store: Store, clock: Clock) -> None:
    incident, runs = recorded_incident(store, clock)
    chart = timeline_chart(incident, runs, store.events.of(incident.id))
    assert chart.png.startswith(PNG_SIGNATURE)
    chunks = _chunks(chart.png)
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height = struct.unpack(">II", chunks[0][1][:8])
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(chart.png), format="png")
    assert pixels.shape[:2] == (height, width)
    assert chart.phases == ("detect", "decide", "approve", "recover")
    assert chart.steps == ("1. Roll back app to rev 2", "2. Health")


def test_the_bars_start_where_the_audit_log_says(store: Store, clock: Clock) -> None:
    incident, runs = recorded_incident(store, clock)
    chart = timeline_chart(incident, runs, store.events.of(incident.id))
    spans = [(b.kind, b.start, b.seconds) for b in chart.bars]
    assert spans == [
        ("detect", 0.0, 20.0),
        ("decide", 20.0, 10.0),
        ("approve", 30.0, 30.0),
        ("recover", 60.0, 20.0),  # approved at 60 s, health passed at 80 s
        ("succeeded", 62.0, 12.0),
        ("succeeded", 74.0, 6.0),
    ]
    assert chart_filename(incident.id) == f"{incident.id}-timeline.png"
