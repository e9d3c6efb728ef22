"""The report through HQ's projection equals the report re-reading every event, at period edges (issue 19 item 6)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hq import projections
from hq import trips as hq_trips
from hq.store import HQStore
from sync.clock import ManualClock
from sync.envelope import Envelope

T0 = datetime(2026, 11, 18, tzinfo=timezone.utc).timestamp()  # the period: 18 November
DAY = 86400.0


def ev(**doc: object) -> bytes:
    return json.dumps(doc).encode()


async def test_projected_report_matches_the_full_one_at_the_edges(tmp_path: Path) -> None:
    store = await HQStore.open(tmp_path / "hq.db", ManualClock(T0))
    db = store.db
    try:
        await hq_trips.create_schema(db)
        await projections.create_schema(db)
        for trip_id, day in (("p-early", "2026-11-18"), ("p-wait", "2026-11-18"), ("p-in", "2026-11-18")):
            await db.execute("INSERT INTO trip_plans(trip_id, node_id, kind, title, planned_date, assigned_to, stops, created, created_by)"
                             " VALUES (?, 'van-01', 'van', ?, ?, NULL, '[]', 0, 'd')", (trip_id, trip_id, day))
        await db.commit()
        first = (ev(type="trip", id="p-early", event="departed", at=T0 - 600),  # planned for the day, left the evening before
                 ev(type="trip", id="p-early", event="returned", at=T0 + 3600, km=12.0),
                 ev(type="queue", id="q1", event="called", at=T0 + 100, by="olena"),  # the call before the issue arrives
                 ev(type="queue", id="q0", event="issued", at=T0 - 50))  # issued the day before: not this period's
        await store.store_envelope(Envelope("van-01", "evt", 1, first, 1), "mqtt")
        assert await projections.project(db) == 4
        later = (ev(type="queue", id="q1", event="issued", at=T0 + 60),
                 ev(type="queue", id="q1", event="served", at=T0 + 400, by="olena"),
                 ev(type="queue", id="q0", event="called", at=T0 + 10, by="olena"),
                 ev(type="queue", id="q0", event="served", at=T0 + 30, by="olena"),
                 ev(type="trip", id="p-in", event="departed", at=T0 + 7200),
                 ev(type="visit", id="v1", event="finished", at=T0 + DAY - 1),
                 ev(type="visit", id="v2", event="finished", at=T0 + DAY),  # the next day's
                 ev(type="down_ack", stream="assign", id="x", result="applied", at=T0))  # not a report event
        await store.store_envelope(Envelope("van-01", "evt", 5, later, 1), "mqtt")
        assert await projections.project(db) == 7

        async def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            async with db.execute(sql, tuple(params)) as cur:
                return [tuple(r) for r in await cur.fetchall()]

        full = await hq_trips.report(fetch, T0, T0 + DAY)
        assert await hq_trips.report(fetch, T0, T0 + DAY, projections.EVENTS_SQL) == full
        assert [t["id"] for t in full["trip_list"]] == ["p-in", "p-wait"]  # p-early left the day before: not waiting
        assert full["workload"]["served_from_queue"] == 1 and full["trips"] == 1
        for t0 in (T0 - DAY, T0 + DAY):
            assert await hq_trips.report(fetch, t0, t0 + DAY, projections.EVENTS_SQL) == await hq_trips.report(fetch, t0, t0 + DAY)
    finally:
        await store.close()
