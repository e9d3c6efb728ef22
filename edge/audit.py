"""Tamper-evident audit log: every read and write of personal data, hash-chained.

Each entry's hash covers the previous entry's hash and the entry itself, so
an edited, removed or inserted entry breaks the chain.  Entries hold who,
what, when and why, never the personal data itself.  They are written in
the caller's transaction and shipped to HQ on the ``audit`` stream, where
hq/audit.py verifies continuity.
"""

from __future__ import annotations

import json
import sqlite3

import aiosqlite

from kit.timesource import Stamp

from sync import outbox
from sync.auditchain import GENESIS, AuditEntry, entry_hash, verify_link
from sync.db import run_sync


def append_sync(conn: sqlite3.Connection, when: float | Stamp, actor: str, action: str, entity: str, entity_id: str,
                reason: str) -> AuditEntry:
    """``append`` for code already on the connection's thread (sync.db.run_sync).

    ``when`` is a Stamp (time, trusted, monotonic, boot: kit.timesource); a bare float is a time without that.
    """
    at, clock = (when.t, when.wire()) if isinstance(when, Stamp) else (when, None)
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (1, GENESIS) if row is None else (int(row[0]) + 1, bytes(row[1]))
    draft = AuditEntry(seq, at, actor, action, entity, entity_id, reason, prev, b"", clock)
    entry = AuditEntry(seq, at, actor, action, entity, entity_id, reason, prev, entry_hash(prev, draft.body()), clock)
    conn.execute(
        "INSERT INTO audit(seq, at, actor, action, entity, entity_id, reason, prev, hash, clock) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at, actor, action, entity, entity_id, reason, prev, entry.hash, None if clock is None else json.dumps(clock)),
    )
    outbox.enqueue_sync(conn, "audit", entry.wire(), at)
    return entry


async def append(db: aiosqlite.Connection, when: float | Stamp, actor: str, action: str, entity: str, entity_id: str,
                 reason: str) -> AuditEntry:
    """Add an entry inside the caller's open transaction and queue it for HQ."""
    return await run_sync(db, append_sync, when, actor, action, entity, entity_id, reason)


async def verify_local(db: aiosqlite.Connection) -> list[str]:
    """Walk the node's own chain; returns the problems found (empty when intact)."""
    problems = []
    prev = GENESIS
    expected = 1
    async with db.execute("SELECT seq, at, actor, action, entity, entity_id, reason, prev, hash, clock FROM audit ORDER BY seq") as cur:
        async for r in cur:
            entry = AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]), bytes(r[8]), None if r[9] is None else json.loads(r[9]))
            if entry.seq != expected:
                problems.append(f"entries {expected}..{entry.seq - 1} are missing")
            problem = verify_link(prev, entry)
            if problem:
                problems.append(problem)
            prev, expected = entry.hash, entry.seq + 1
    return problems
