"""The node's outbox: rows written in the caller's transaction, pruned on HQ's ack.

``enqueue`` never commits: the store calls it inside the same SQLite
transaction as the record and its audit entry, so the record and its way to
HQ are durable together or not at all.  Sequence numbers are dense per
stream (1, 2, 3, ...), which lets HQ ack cumulatively and spot gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from .db import transaction
from .migrate import migrate

MIGRATIONS = [
    """
CREATE TABLE outbox (
    stream   TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    payload  BLOB    NOT NULL,
    created  REAL    NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE TABLE outbox_stream (
    stream    TEXT PRIMARY KEY,
    next_seq  INTEGER NOT NULL DEFAULT 1,
    acked     INTEGER NOT NULL DEFAULT 0,
    acked_at  REAL
);
""",
]

# Drain order: what HQ needs to track the fleet first, bulky things last.
PRIORITY = ("status", "pos", "rec", "audit", "evt", "blob")


@dataclass(frozen=True)
class OutboxRow:
    stream: str
    seq: int
    payload: bytes
    created: float


@dataclass(frozen=True)
class StreamState:
    stream: str
    next_seq: int
    acked: int
    acked_at: float | None

    @property
    def pending(self) -> int:
        return self.next_seq - 1 - self.acked


async def create_schema(db: aiosqlite.Connection) -> None:
    await migrate(db, "outbox", MIGRATIONS)


async def enqueue(db: aiosqlite.Connection, stream: str, payload: bytes, now: float) -> int:
    """Add one item inside the caller's open transaction; returns its sequence number."""
    await db.execute("INSERT OR IGNORE INTO outbox_stream(stream) VALUES (?)", (stream,))
    async with db.execute(
        "UPDATE outbox_stream SET next_seq = next_seq + 1 WHERE stream = ? RETURNING next_seq - 1", (stream,)
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    seq = int(row[0])
    await db.execute(
        "INSERT INTO outbox(stream, seq, payload, created) VALUES (?, ?, ?, ?)", (stream, seq, payload, now)
    )
    return seq


async def streams(db: aiosqlite.Connection) -> dict[str, StreamState]:
    async with db.execute("SELECT stream, next_seq, acked, acked_at FROM outbox_stream") as cur:
        return {r[0]: StreamState(r[0], r[1], r[2], r[3]) async for r in cur}


async def batch(db: aiosqlite.Connection, stream: str, after_seq: int, max_items: int, max_bytes: int) -> list[OutboxRow]:
    """The next rows to send after ``after_seq``, at least one, within the size limit."""
    rows: list[OutboxRow] = []
    size = 0
    async with db.execute(
        "SELECT seq, payload, created FROM outbox WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?",
        (stream, after_seq, max_items),
    ) as cur:
        async for seq, payload, created in cur:
            if rows and (size + len(payload) > max_bytes or seq != rows[-1].seq + 1):
                break
            rows.append(OutboxRow(stream, seq, bytes(payload), created))
            size += len(payload)
    return rows


async def oldest_pending(db: aiosqlite.Connection) -> float | None:
    async with db.execute("SELECT MIN(created) FROM outbox") as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def apply_ack(db: aiosqlite.Connection, stream: str, upto: int, now: float) -> bool:
    """Prune what HQ holds; cumulative and idempotent, in its own transaction.  True if it moved."""
    async with transaction(db):
        async with db.execute("SELECT acked, next_seq FROM outbox_stream WHERE stream = ?", (stream,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return False
        acked, next_seq = row
        # HQ cannot hold what we never produced: a larger ack is forged or from a wiped node.
        upto = min(upto, next_seq - 1)
        if upto <= acked:
            return False
        await db.execute("DELETE FROM outbox WHERE stream = ? AND seq <= ?", (stream, upto))
        await db.execute("UPDATE outbox_stream SET acked = ?, acked_at = ? WHERE stream = ?", (upto, now, stream))
    return True
