"""HQ's read side kept up to date as the vans' events arrive (issue 19 item 6).

The department report (hq/trips.py ``compute``) needs, for a period, every
event of the trips, queue tickets and home visits that belong to it (by the
instants of sync/figures.py: a trip's departure, a ticket's issue, a visit's
finish).  Instead of reading every event ever stored on each request, this
projection indexes each such event once, when it arrives, under the fact it
belongs to (``proj_facts``: kind, key, the fact's instant) and its place in
the van's stream (``proj_members``).  A report then reads only the events of
the facts in its period, through these indexes, and hands them to the same
``compute``: the figures are the same by construction.

Folded with its own cursor (``proj_cursor``, hq/events.py), in one
transaction per van with the cursor's advance, so a crash re-folds at most
the uncommitted round; the upserts make a re-fold harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from kit.tasks import LOOPS, background

from .appkeys import CONFIG, STORE
from .db import DB, migrate
from .events import fold_events

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE proj_cursor (node_id TEXT PRIMARY KEY, seq BIGINT NOT NULL);
    CREATE TABLE proj_facts (
        node_id TEXT NOT NULL, kind TEXT NOT NULL, fact_key TEXT NOT NULL, at DOUBLE PRECISION, exact BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (node_id, kind, fact_key)
    );
    CREATE INDEX proj_facts_at ON proj_facts(at);
    CREATE TABLE proj_members (
        node_id TEXT NOT NULL, kind TEXT NOT NULL, fact_key TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (node_id, kind, fact_key, seq)
    );
    CREATE INDEX records_created ON records(created);
    CREATE INDEX ratings_at ON ratings(at);
    """,
]

# The events of the facts in [t0, t1), and of the trips planned for days d0..d1 (a plan's trip may have left
# outside the period: the report must know it left, not list it as waiting).  Driven by the index on the facts'
# instant, so a period reads its own rows, not the whole history.  Params: t0, t1, d0, d1, t0, t1.
# Rows: (node_id, payload, seq), in stream order.
EVENTS_SQL = (
    "SELECT m.node_id, i.payload, m.seq FROM proj_facts f"
    " JOIN proj_members m ON m.node_id = f.node_id AND m.kind = f.kind AND m.fact_key = f.fact_key"
    " JOIN items i ON i.node_id = m.node_id AND i.stream = 'evt' AND i.seq = m.seq"
    " WHERE f.at >= ? AND f.at < ?"
    " UNION ALL "
    "SELECT m.node_id, i.payload, m.seq FROM trip_plans p"
    " JOIN proj_facts f ON f.node_id = p.node_id AND f.kind = 'trip' AND f.fact_key = p.trip_id"
    " JOIN proj_members m ON m.node_id = f.node_id AND m.kind = f.kind AND m.fact_key = f.fact_key"
    " JOIN items i ON i.node_id = m.node_id AND i.stream = 'evt' AND i.seq = m.seq"
    " WHERE p.planned_date >= ? AND p.planned_date <= ? AND (f.at IS NULL OR f.at < ? OR f.at >= ?)"
    " ORDER BY 1, 3"
)


def events_params(t0: float, t1: float, d0: str, d1: str) -> tuple[Any, ...]:
    return (t0, t1, d0, d1, t0, t1)


_LOCKS: dict[int, asyncio.Lock] = {}


async def create_schema(db: DB) -> None:
    await migrate(db, "hq_projections", MIGRATIONS)


def _fact(doc: dict[str, Any]) -> tuple[str, str, float | None, bool] | None:
    """(kind, key, the instant it gives its fact, whether that instant is the defining one) of a report event; None otherwise."""
    at = doc.get("at")
    if not isinstance(at, (int, float)):
        at = None
    kind, event = doc.get("type"), doc.get("event")
    if kind == "trip":
        return "trip", str(doc.get("id")), float(at) if at is not None and event == "departed" else None, event == "departed"
    if kind == "queue" and at is not None:
        return "queue", str(doc.get("id")), float(at), event == "issued"
    if kind == "visit" and event == "finished" and at is not None:
        return "visit", str(doc.get("id")), float(at), True
    return None


async def project(db: DB) -> int:
    """Index the events not seen yet; returns how many were report events."""
    lock = _LOCKS.setdefault(id(db), asyncio.Lock())
    async with lock:  # one fold per connection at a time

        facts: list[tuple[Any, ...]] = []
        members: list[tuple[Any, ...]] = []

        async def fold(node_id: str, doc: dict[str, Any], seq: int) -> bool:
            f = _fact(doc)
            if f is None:
                return False
            kind, key, at, exact = f
            facts.append((node_id, kind, key, at, 1 if exact and at is not None else 0))
            members.append((node_id, kind, key, seq))
            return True

        async def flush() -> None:
            # In stream order, so the upsert sees a ticket's issue before its call, as the van sent them.
            # The defining instant (departure, issue) wins; otherwise the earliest seen stands in (a ticket whose issue
            # never arrived counts from its call, as compute does).
            await db.executemany(
                "INSERT INTO proj_facts(node_id, kind, fact_key, at, exact) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (node_id, kind, fact_key) DO UPDATE SET"
                " at = CASE WHEN proj_facts.exact = 1 THEN proj_facts.at WHEN excluded.exact = 1 THEN excluded.at"
                " WHEN proj_facts.at IS NULL OR (excluded.at IS NOT NULL AND excluded.at < proj_facts.at) THEN excluded.at ELSE proj_facts.at END,"
                " exact = CASE WHEN proj_facts.exact = 1 OR excluded.exact = 1 THEN 1 ELSE 0 END", facts)
            await db.executemany("INSERT INTO proj_members(node_id, kind, fact_key, seq) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", members)
            facts.clear()
            members.clear()

        return await fold_events(db, "proj_cursor", fold, with_seq=True, flush=flush)


async def projections_ctx(app: web.Application) -> AsyncIterator[None]:
    """Schema, then one loop folding what has arrived, so a report finds its index (nearly) current."""
    cfg, db = app[CONFIG], app[STORE].db
    await create_schema(db)

    async def loop() -> None:
        while True:
            try:
                await project(db)
            except Exception:  # one bad round must not stop the loop; logged with its traceback
                log.exception("report projection round failed")
            await cfg.clock.sleep(cfg.ack_poll_interval)

    async with background(loop, "hq-projections", app[LOOPS]):
        yield
