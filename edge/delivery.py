"""Where each application is on its way to HQ, read from the sync ledger (issue 18 item 7).

States, in order: ``created`` (saved on the van, waiting for the link), ``sent`` (published,
waiting for HQ's ack), ``acknowledged`` (HQ's cumulative ack covers it: ``acknowledged`` is
the van's time of that ack), ``quarantined`` (HQ stored it but held it back, with HQ's reason).
The ledger keys are the application's ``outbox_seq`` on stream ``rec`` (sync/outbox.py).
Nothing here is personal data: numbers, service codes and times only, so it works while the
store is locked too.
"""

from __future__ import annotations

from typing import Any

import aiosqlite

_SELECT = (
    "SELECT a.id, a.number, a.service_code, a.created, a.time_trusted, l.created, l.sent, l.acked, q.reason, q.at, s.status, s.received,"
    " COALESCE(o.acked, 0) >= a.outbox_seq"
    " FROM applications a"
    " LEFT JOIN outbox_stream o ON o.stream = 'rec'"
    " LEFT JOIN sync_ledger l ON l.stream = 'rec' AND l.seq = a.outbox_seq"
    " LEFT JOIN quarantine q ON q.stream = 'rec' AND q.seq = a.outbox_seq"
    " LEFT JOIN app_status s ON s.application_id = a.id"
)


def _row(r: Any) -> dict[str, Any]:
    sent, acked, q_reason = r[6], r[7], r[8]
    # A row older than the ledger has no times, but the stream's cumulative ack still says whether HQ holds it.
    state = "quarantined" if q_reason is not None else "acknowledged" if acked or r[12] else "sent" if sent else "created"
    return {
        "id": r[0], "number": r[1], "service_code": r[2], "created": r[3], "created_trusted": r[4] == 1,
        "delivery": {"state": state, "sent": sent, "acknowledged": acked,
                     "quarantine": None if q_reason is None else {"reason": q_reason, "at": r[9]}},
        "status": r[10] or "accepted", "status_received": r[11],
    }


async def one(db: aiosqlite.Connection, app_id: str) -> dict[str, Any] | None:
    async with db.execute(_SELECT + " WHERE a.id = ?", (app_id,)) as cur:
        r = await cur.fetchone()
    return None if r is None else _row(r)


async def recent(db: aiosqlite.Connection, limit: int = 200, status: str | None = None) -> list[dict[str, Any]]:
    """The newest applications first; with ``status``, only those HQ set to it (e.g. "ready")."""
    where, args = (" WHERE s.status = ?", (status, limit)) if status else ("", (limit,))
    async with db.execute(_SELECT + where + " ORDER BY a.created DESC, a.number DESC LIMIT ?", args) as cur:
        return [_row(r) for r in await cur.fetchall()]


async def waiting(db: aiosqlite.Connection) -> int:
    """How many applications HQ has not confirmed yet (an offline day shows this)."""
    async with db.execute(
        "SELECT COUNT(*) FROM applications a LEFT JOIN outbox_stream o ON o.stream = 'rec' WHERE a.outbox_seq > COALESCE(o.acked, 0)"
    ) as cur:
        r = await cur.fetchone()
    return int(r[0]) if r else 0
