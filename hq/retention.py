"""Retention at HQ: personal data is kept for a period after the case is closed, then crypto-shredded.

A case is closed when its status is ``issued`` or ``refused`` (hq/appstatus.py);
``--hq-retention-days`` after that (default 1826, five years: see docs/hq.md)
the round removes HQ's wraps of the data keys and the sealed fields of the
application, of its applicant card (once no open case still uses the card) and
of its attachments (every chunk's ciphertext, and the wrap and sealed name in
chunk 0's header), in ``records``/``applicants`` and in the stored ``items``
alike, blanks the sealed comments of its ratings (the score stays), and drops the record's entries in the keyed index.  What is not
personal stays for the statistics: number, van, service, dates, status.
Every shredded record is written to ``retention_log``, the report
(``GET /retention``, ``GET /api/v1/retention``, ``mobile-office hq-retention``).
The round runs in a supervised loop (``--hq-retention-interval``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from kit.tasks import LOOPS, background
from kit.web import json_response
from sync.blob import HEADER, parse_blob_item

from . import appstatus, attachments, vault
from .appkeys import CONFIG, STORE
from .db import migrate, transaction
from .pages import page, session
from .store import HQStore

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
CREATE TABLE retention_log (
    record_id TEXT PRIMARY KEY, number TEXT NOT NULL, node_id TEXT NOT NULL, service_code TEXT NOT NULL, status TEXT NOT NULL,
    closed_at DOUBLE PRECISION NOT NULL, shredded_at DOUBLE PRECISION NOT NULL, applicant TEXT NOT NULL, attachments BIGINT NOT NULL
);
CREATE INDEX retention_log_at ON retention_log(shredded_at)
""",
]

DAY = 86400.0


async def create_schema(store: HQStore) -> None:
    await appstatus.create_schema(store)  # the statuses that close a case
    await vault.create_schema(store)
    await attachments.create_schema(store)
    await migrate(store.db, "hq_retention", MIGRATIONS)


def _stripped(sealed: str, now: float) -> str:
    """The record's JSON without what opens it: no fields, no wrap; the rest (number, service, dates) stays."""
    doc = json.loads(sealed)
    doc["fields"] = {}
    doc.pop("wrap_hq", None)
    doc["shredded"] = now
    return json.dumps(doc, separators=(",", ":"))


async def _links(store: HQStore) -> None:
    """Which applicant card each record uses (plain metadata in the record's JSON), for records not linked yet."""
    async with store.db.execute(
        "SELECT r.record_id, r.sealed FROM records r LEFT JOIN vault_link l ON l.record_id = r.record_id WHERE l.record_id IS NULL"
    ) as cur:
        rows = await cur.fetchall()
    links = [(str(rid), str(json.loads(sealed).get("applicant") or "")) for rid, sealed in rows]
    if links:
        async with transaction(store.db):
            await store.db.executemany("INSERT INTO vault_link(record_id, applicant_id) VALUES (?, ?) ON CONFLICT (record_id) DO NOTHING",
                                       links)


async def due(store: HQStore, retention_days: float) -> list[tuple[Any, ...]]:
    """Closed cases past their period, not shredded yet."""
    cutoff = store.clock.now() - retention_days * DAY
    async with store.db.execute(
        "SELECT r.record_id, r.node_id, r.seq, r.number, r.service_code, r.sealed, s.status, s.updated_at FROM records r"
        " JOIN app_status s ON s.record_id = r.record_id LEFT JOIN retention_log g ON g.record_id = r.record_id"
        " WHERE s.status IN (?, ?) AND s.updated_at < ? AND g.record_id IS NULL ORDER BY s.updated_at",
        (*vault.CLOSED, cutoff),
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def _shred_attachments(store: HQStore, record_id: str) -> int:
    async with store.db.execute("SELECT node_id, seq, attachment_id FROM attachment_index WHERE application_id = ?", (record_id,)) as cur:
        chunks = await cur.fetchall()
    for node_id, seq, _ in chunks:
        async with store.db.execute("SELECT payload FROM items WHERE node_id = ? AND stream = 'blob' AND seq = ?", (node_id, seq)) as cur:
            row = await cur.fetchone()
        if row is None:
            continue
        head, _chunk = parse_blob_item(bytes(row[0]))
        for k in ("wrap_hq", "meta"):
            head.pop(k, None)
        head["shredded"] = True
        h = json.dumps(head, separators=(",", ":")).encode()
        await store.db.execute("UPDATE items SET payload = ? WHERE node_id = ? AND stream = 'blob' AND seq = ?",
                               (HEADER.pack(len(h)) + h, node_id, seq))
    return len({str(c[2]) for c in chunks})


async def _shred_comments(store: HQStore, record_id: str) -> None:
    """A citizen's comment on the service may name them: its sealed text goes; '' keeps "there was a comment" for the figures."""
    async with store.db.execute("SELECT node_id, seq FROM ratings WHERE application_id = ? AND comment_sealed IS NOT NULL AND comment_sealed <> ''",
                                (record_id,)) as cur:
        rows = list(await cur.fetchall())
    for node_id, seq in rows:
        await store.db.execute("UPDATE ratings SET comment_sealed = '' WHERE node_id = ? AND seq = ?", (node_id, seq))
        async with store.db.execute("SELECT payload FROM items WHERE node_id = ? AND stream = 'rec' AND seq = ?", (node_id, seq)) as cur:
            row = await cur.fetchone()
        if row is not None:
            doc = json.loads(bytes(row[0]))
            doc["comment_sealed"] = ""
            await store.db.execute("UPDATE items SET payload = ? WHERE node_id = ? AND stream = 'rec' AND seq = ?",
                                   (json.dumps(doc, separators=(",", ":")).encode(), node_id, seq))


async def run_round(store: HQStore, retention_days: float) -> list[dict[str, Any]]:
    """Shred every closed case past its period; returns what was removed (also in ``retention_log``)."""
    await _links(store)
    await attachments.refresh(store)
    done = []
    for rid, node_id, seq, number, service, sealed, status, closed_at in await due(store, retention_days):
        now = store.clock.now()
        applicant = "none"
        async with transaction(store.db):
            await store.db.execute("UPDATE records SET sealed = ? WHERE record_id = ?", (_stripped(sealed, now), rid))
            await store.db.execute("UPDATE items SET payload = ? WHERE node_id = ? AND stream = 'rec' AND seq = ?",
                                   (_stripped(sealed, now).encode(), node_id, seq))
            await store.db.execute("DELETE FROM vault_index WHERE doc_table = 'applications' AND doc_id = ?", (rid,))
            applicant_id = str(json.loads(sealed).get("applicant") or "")
            if applicant_id:
                # The card goes with its last open case: another application still open keeps it.
                async with store.db.execute(
                    "SELECT COUNT(*) FROM vault_link l LEFT JOIN retention_log g ON g.record_id = l.record_id"
                    " WHERE l.applicant_id = ? AND l.record_id <> ? AND g.record_id IS NULL", (applicant_id, rid)
                ) as cur:
                    row = await cur.fetchone()
                applicant = "kept"
                if row is not None and int(row[0]) == 0:
                    async with store.db.execute("SELECT node_id, seq, sealed FROM applicants WHERE record_id = ?", (applicant_id,)) as cur:
                        arow = await cur.fetchone()
                    applicant = "pending"  # not arrived yet: nothing to shred here (the next round finds no open case either)
                    if arow is not None:
                        await store.db.execute("UPDATE applicants SET sealed = ? WHERE record_id = ?", (_stripped(arow[2], now), applicant_id))
                        await store.db.execute("UPDATE items SET payload = ? WHERE node_id = ? AND stream = 'rec' AND seq = ?",
                                               (_stripped(arow[2], now).encode(), arow[0], arow[1]))
                        await store.db.execute("DELETE FROM vault_index WHERE doc_table = 'applicants' AND doc_id = ?", (applicant_id,))
                        applicant = "shredded"
            files = await _shred_attachments(store, rid)
            await _shred_comments(store, rid)
            entry = {"record_id": rid, "number": number, "node_id": node_id, "service_code": service, "status": status,
                     "closed_at": float(closed_at), "shredded_at": now, "applicant": applicant, "attachments": files}
            await store.db.execute(
                "INSERT INTO retention_log(record_id, number, node_id, service_code, status, closed_at, shredded_at, applicant, attachments)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(entry.values()))
        done.append(entry)
    if done:
        log.info("retention: shredded the personal data of %d closed case(s)", len(done))
    return done


async def report(store: HQStore, limit: int = 200, offset: int = 0) -> dict[str, Any]:
    """What was removed, newest first, and how many in all (no personal data: numbers, vans, services, dates)."""
    async with store.db.execute("SELECT COUNT(*) FROM retention_log") as cur:
        row = await cur.fetchone()
    async with store.db.execute(
        "SELECT record_id, number, node_id, service_code, status, closed_at, shredded_at, applicant, attachments FROM retention_log"
        " ORDER BY shredded_at DESC, number LIMIT ? OFFSET ?", (limit, offset)
    ) as cur:
        rows = [{"record_id": r[0], "number": r[1], "node_id": r[2], "service_code": r[3], "status": r[4], "closed_at": r[5],
                 "shredded_at": r[6], "applicant": r[7], "attachments": int(r[8])} async for r in cur]
    return {"total": int(row[0]) if row else 0, "shredded": rows}


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    await create_schema(app[STORE])

    async def loop() -> None:
        while True:
            await run_round(app[STORE], cfg.retention_days)  # a failing round is logged and restarted by the supervisor
            await cfg.clock.sleep(cfg.retention_interval)

    async with background(loop, "hq-retention", app[LOOPS]):
        yield


def _paging(request: web.Request) -> tuple[int, int]:
    try:
        return max(1, min(int(request.query.get("limit", "200")), 1000)), max(0, int(request.query.get("offset", "0")))
    except ValueError:
        return 200, 0


async def report_json(request: web.Request) -> web.Response:
    session(request)
    limit, offset = _paging(request)
    doc = await report(request.app[STORE], limit, offset)
    return json_response({"retention_days": request.app[CONFIG].retention_days, **doc})


async def report_page(request: web.Request) -> web.Response:
    session(request)
    limit, offset = _paging(request)
    doc = await report(request.app[STORE], limit, offset)
    return await page(request, "retention.html", {"report": doc, "retention_days": request.app[CONFIG].retention_days,
                                                  "limit": limit, "offset": offset})


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(retention_ctx)
    app.router.add_get("/retention", report_page)
    app.router.add_get("/api/v1/retention", report_json)
