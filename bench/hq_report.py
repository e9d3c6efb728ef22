"""HQ's department report over a year of a fleet's events: through the projection, against reading the same rows.

Generates (deterministically) what ``--vans`` vans send in ``--days`` days:
each day one trip (departed, ``--stops`` stops arrived and left, returned),
``--tickets`` queue tickets (issued, called, served), one home visit
finished, and ``--records`` applications with a rating for each fifth.
Everything goes into a real HQ SQLite database (hq/store.py) as the ingest
would leave it (``items``, ``stream_state``, ``records``, ``ratings``).

Then, in the same run:
* the projection folds every event once (hq/projections.py), as it would as they arrive;
* the report for one ``--period-days`` period (the middle of the range) through
  the projection, the median of ``--runs``: what a page costs now;
* baseline: reading the same rows (the period's events, records and ratings) with
  the same connection and no work on them;
* the report as it was, re-reading and folding every event stored (one run).

Printed as times and as ratios to the baseline (timings are for this
machine, this run; compare ratios, not milliseconds).

Run: .venv/bin/python bench/hq_report.py [--vans 100] [--days 365]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hq import projections, trips  # noqa: E402
from hq.store import HQStore  # noqa: E402
from sync.clock import ManualClock  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
DAY = 86400.0
SERVICES = ("RES-01", "SOC-01", "PEN-01", "RES-02")


def van_day(node: str, day: int, a: argparse.Namespace) -> tuple[list[bytes], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """One van's events, applications and ratings of one day."""
    t = START + day * DAY + 7 * 3600
    trip = f"{node}-t{day}"
    ev: list[dict[str, Any]] = [{"type": "trip", "id": trip, "event": "departed", "at": t}]
    for s in range(a.stops):
        stop = {"id": f"{trip}-{s + 1}", "place": None, "name": "", "lat": 48.0 + s / 100, "lon": 33.4}
        ev.append({"type": "trip", "id": trip, "event": "at_stop", "at": t + 1800 + s * 7200, "stop": stop})
        ev.append({"type": "trip", "id": trip, "event": "left_stop", "at": t + 7000 + s * 7200, "stop": {"id": stop["id"], "records": {}}})
    for k in range(a.tickets):
        q, at = f"{node}-q{day}-{k}", t + 1900 + k * 300
        ev += [{"type": "queue", "id": q, "event": "issued", "at": at}, {"type": "queue", "id": q, "event": "called", "at": at + 120, "by": "olena"},
               {"type": "queue", "id": q, "event": "served", "at": at + 600, "by": "olena"}]
    ev.append({"type": "visit", "id": f"{node}-v{day}", "event": "finished", "at": t + 5000})
    ev.append({"type": "trip", "id": trip, "event": "returned", "at": t + 10 * 3600, "km": 42.5, "stops": a.stops})
    records = [(f"{node}-r{day}-{k}", SERVICES[k % len(SERVICES)], t + 2000 + k * 600, f"{day:04d}-{k}") for k in range(a.records)]
    ratings = [(r[0], 1 + (k % 5), r[2] + 300) for k, r in enumerate(records) if k % 5 == 0]
    return [json.dumps(e, separators=(",", ":")).encode() for e in ev], records, ratings


async def generate(store: HQStore, a: argparse.Namespace) -> int:
    db, n = store.db, 0
    for v in range(a.vans):
        node = f"van-{v + 1:03d}"
        items: list[tuple[Any, ...]] = []
        recs: list[tuple[Any, ...]] = []
        rates: list[tuple[Any, ...]] = []
        for day in range(a.days):
            evs, r, rt = van_day(node, day, a)
            items += [(node, len(items) + 1 + i, p) for i, p in enumerate(evs)]
            recs += r
            rates += rt
        await db.execute("BEGIN")
        await db.executemany("INSERT INTO items(node_id, stream, seq, payload, hlc, via, received) VALUES (?, 'evt', ?, ?, 0, 'bench', 0)", items)
        await db.execute("INSERT INTO stream_state(node_id, stream, contiguous) VALUES (?, 'evt', ?)", (node, len(items)))
        await db.execute("INSERT INTO node_state(node_id) VALUES (?)", (node,))
        await db.executemany("INSERT INTO records(node_id, seq, record_id, number, service_code, created, sealed, citizen)"
                             " VALUES (?, ?, ?, ?, ?, ?, '', ?)", [(node, i + 1, rid, rid, code, at, cit) for i, (rid, code, at, cit) in enumerate(recs)])
        await db.executemany("INSERT INTO ratings(node_id, seq, application_id, score, at) VALUES (?, ?, ?, ?, ?)",
                             [(node, len(recs) + i + 1, rid, score, at) for i, (rid, score, at) in enumerate(rates)])
        await db.execute("COMMIT")
        n += len(items)
    return n


async def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vans", type=int, default=100)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--stops", type=int, default=3)
    p.add_argument("--tickets", type=int, default=30, help="queue tickets per van and day")
    p.add_argument("--records", type=int, default=20, help="applications per van and day")
    p.add_argument("--period-days", type=int, default=30)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hq-report-") as tmp:
        store = await HQStore.open(Path(tmp) / "hq.db", ManualClock(START))
        try:
            await trips.create_schema(store.db)
            await projections.create_schema(store.db)
            t = time.perf_counter()
            n = await generate(store, a)
            gen = time.perf_counter() - t
            print(f"events: {n} ({a.vans} vans x {a.days} days), generated in {gen:.1f} s")
            t = time.perf_counter()
            used = await projections.project(store.db)
            fold = time.perf_counter() - t
            print(f"projection: {used} events folded once in {fold:.2f} s ({used / fold if fold else 0:.0f} events/s; on arrival, not per request)")

            db = store.db

            async def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                async with db.execute(sql, tuple(params)) as cur:
                    return [tuple(r) for r in await cur.fetchall()]

            mid = max(0, a.days // 2 - a.period_days // 2)
            t0, t1 = START + mid * DAY, START + (mid + min(a.period_days, a.days)) * DAY
            d0 = datetime.fromtimestamp(t0, timezone.utc).date().isoformat()
            d1 = datetime.fromtimestamp(t1 - 1, timezone.utc).date().isoformat()

            async def read_rows() -> int:
                rows = await fetch(projections.EVENTS_SQL, projections.events_params(t0, t1, d0, d1))
                rows += await fetch(trips.QUERIES["records"][0], (t0, t1))
                rows += await fetch(trips.QUERIES["ratings"][0], (t0, t1))
                return len(rows)

            await trips.report(fetch, t0, t1, projections.EVENTS_SQL)  # warm-up: the catalogue and category files load once
            reads, reports = [], []
            rep: dict[str, Any] = {}
            rows = 0
            for _ in range(max(1, a.runs)):
                t = time.perf_counter()
                rows = await read_rows()
                reads.append(time.perf_counter() - t)
                t = time.perf_counter()
                await projections.project(db)  # a page folds what arrived since: nothing here
                rep = await trips.report(fetch, t0, t1, projections.EVENTS_SQL)
                reports.append(time.perf_counter() - t)
            read_s, report_s = statistics.median(reads), statistics.median(reports)
            t = time.perf_counter()
            full = await trips.report(fetch, t0, t1)
            full_s = time.perf_counter() - t
            assert full == rep, "the projection changed the report"
            print(f"period: {d0} .. {d1}: {rep['trips']} trips, {rep['citizens_served']} citizens served; {rows} rows read")
            print(f"read the same rows (baseline): {read_s * 1000:.1f} ms")
            print(f"report through the projection: {report_s * 1000:.1f} ms (median of {len(reports)})")
            print(f"report re-reading every event (before): {full_s * 1000:.1f} ms")
            print(f"ratio report/read: {report_s / read_s:.2f}")
            print(f"ratio before/now: {full_s / report_s:.1f}")
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
