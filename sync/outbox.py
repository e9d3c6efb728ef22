"""The node's outbox: rows written in the caller's transaction, pruned on HQ's ack.

``enqueue`` never commits: the store calls it inside the same SQLite
transaction as the record and its audit entry, so the record and its way to
HQ are durable together or not at all.  Sequence numbers are dense per
stream (1, 2, 3, ...), which lets HQ ack cumulatively and spot gaps.
"""

from __future__ import annotations

import os
import weakref
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from kit import settings

from .db import run_sync, run_transaction, run_transaction_unsynced, transaction
from .errors import OutboxFull
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
    # 2: per-class byte accounting, a per-item sync ledger, the node's view of HQ's quarantine
    """
ALTER TABLE outbox_stream ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE outbox_stream SET bytes = COALESCE((SELECT SUM(length(payload)) FROM outbox o WHERE o.stream = outbox_stream.stream), 0);
CREATE TABLE sync_ledger (
    stream  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    created REAL    NOT NULL,
    sent    REAL,
    acked   REAL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE TABLE quarantine (
    stream TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
""",
    # 3: this database's instance id, sent in every envelope so HQ tells a re-flashed van's numbers
    # from the old ones.  Chosen once, here, by SQLite's randomblob (seeded from the OS); a database
    # that already sent something keeps the empty (legacy) id, which HQ knows its data under.
    """
CREATE TABLE node_instance (one INTEGER PRIMARY KEY CHECK (one = 1), id BLOB NOT NULL);
INSERT INTO node_instance(one, id) SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM outbox_stream) THEN x'' ELSE randomblob(8) END
""",
]

_MB = 1024 * 1024

# Drain order: what HQ needs to track the fleet first, bulky things last.
PRIORITY = ("status", "pos", "rec", "audit", "evt", "blob")
# Streams whose every item gets a ledger row an administrator can read; raw GPS
# (tens of thousands of points a day) is tracked per stream only.
LEDGER_STREAMS = frozenset({"rec", "audit", "evt", "blob"})
# Streams that are never dropped: intake is refused before they overflow.
NEVER_DROP = frozenset({"rec", "audit", "evt", "blob"})


@dataclass
class Limits:
    """Byte limits per data class, and the disk space always kept free (defaults: the settings registry, kit/settings.py)."""

    per_stream: dict[str, int] = field(default_factory=lambda: _per_stream(settings.NODE.defaults()))
    min_free_disk: int = int(settings.NODE.defaults()["min_free_disk_mb"] * _MB)

    def limit(self, stream: str) -> int | None:
        return self.per_stream.get(stream)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> Limits:
        """From resolved settings (``settings.NODE.resolve``)."""
        return cls(_per_stream(values), int(values["min_free_disk_mb"] * _MB))


def _per_stream(values: Mapping[str, Any]) -> dict[str, int]:
    return {"rec": int(values["limit_records_mb"] * _MB), "audit": int(values["limit_audit_mb"] * _MB),
            "evt": int(values["limit_events_mb"] * _MB), "blob": int(values["limit_files_mb"] * _MB),
            "pos": int(values["limit_positions_mb"] * _MB)}


DEFAULT_LIMITS = Limits()


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
    bytes: int = 0

    @property
    def pending(self) -> int:
        return self.next_seq - 1 - self.acked


async def create_schema(db: aiosqlite.Connection) -> None:
    await migrate(db, "outbox", MIGRATIONS)


async def instance_id(db: aiosqlite.Connection) -> str:
    """Hex of this database's instance id ("" for a database older than instance ids)."""
    async with db.execute("SELECT id FROM node_instance") as cur:
        row = await cur.fetchone()
    return bytes(row[0]).hex() if row else ""


def enqueue_sync(conn: sqlite3.Connection, stream: str, payload: bytes, now: float) -> int:
    """``enqueue`` for code already on the connection's thread (see sync.db.run_sync)."""
    # One upsert numbers the item and accounts its bytes (intake runs this twice per record: fewer statements, faster).
    row = conn.execute(
        "INSERT INTO outbox_stream(stream, next_seq, bytes) VALUES (?, 2, ?)"
        " ON CONFLICT(stream) DO UPDATE SET next_seq = next_seq + 1, bytes = bytes + excluded.bytes RETURNING next_seq - 1",
        (stream, len(payload)),
    ).fetchone()
    assert row is not None
    seq = int(row[0])
    conn.execute("INSERT INTO outbox(stream, seq, payload, created) VALUES (?, ?, ?, ?)", (stream, seq, payload, now))
    if stream in LEDGER_STREAMS:
        conn.execute("INSERT OR REPLACE INTO sync_ledger(stream, seq, created) VALUES (?, ?, ?)", (stream, seq, now))
    return seq


async def enqueue(db: aiosqlite.Connection, stream: str, payload: bytes, now: float) -> int:
    """Add one item inside the caller's open transaction; returns its sequence number."""
    return await run_sync(db, enqueue_sync, stream, payload, now)


async def streams(db: aiosqlite.Connection) -> dict[str, StreamState]:
    async with db.execute("SELECT stream, next_seq, acked, acked_at, bytes FROM outbox_stream") as cur:
        return {r[0]: StreamState(r[0], r[1], r[2], r[3], r[4]) async for r in cur}


def check_capacity_sync(conn: sqlite3.Connection, stream: str, incoming: int = 0, limits: Limits = DEFAULT_LIMITS) -> None:
    """``check_capacity`` for code already on the connection's thread (sync.db.run_sync)."""
    check_capacities_sync(conn, {stream: incoming}, limits)


def check_capacities_sync(conn: sqlite3.Connection, incoming: dict[str, int], limits: Limits = DEFAULT_LIMITS) -> None:
    """Several classes at once (an intake adds a record and its audit entry): one query, one look at the disk."""
    limited = [s for s in incoming if limits.limit(s) is not None]
    if limited:
        marks = ", ".join("?" * len(limited))
        used = {str(r[0]): int(r[1]) for r in conn.execute(f"SELECT stream, bytes FROM outbox_stream WHERE stream IN ({marks})", limited)}
        for stream in limited:
            limit = limits.limit(stream)
            assert limit is not None
            if used.get(stream, 0) + incoming[stream] > limit:
                raise OutboxFull(stream, f"outbox class {stream!r} holds {used.get(stream, 0)} of {limit} bytes")
    path = _db_path(conn)
    if path is not None:
        total = sum(incoming.values())
        st = os.statvfs(os.path.dirname(path) or ".")
        free = st.f_bavail * st.f_frsize
        if free - total < limits.min_free_disk:
            raise OutboxFull(next(iter(incoming)), f"only {free} bytes free on the data disk")


# A connection's file never changes: ask SQLite once per connection.
_paths: weakref.WeakKeyDictionary[sqlite3.Connection, str | None] = weakref.WeakKeyDictionary()


def _db_path(conn: sqlite3.Connection) -> str | None:
    try:
        return _paths[conn]
    except (KeyError, TypeError):
        pass
    path = next((str(p) for _seq, name, p in conn.execute("PRAGMA database_list") if name == "main" and p), None)
    try:
        _paths[conn] = path
    except TypeError:  # a connection type that cannot be weakly referenced: just ask each time
        pass
    return path


async def check_capacity(
    db: aiosqlite.Connection, stream: str, incoming: int = 0, limits: Limits = DEFAULT_LIMITS
) -> None:
    """Raise OutboxFull if accepting ``incoming`` more bytes on ``stream`` would break a limit.

    The store calls this *before* it accepts a record, so an administrator is
    told to wait for the link instead of the node ever dropping a saved record.
    """
    await run_sync(db, check_capacity_sync, stream, incoming, limits)


async def capacity_ok(db: aiosqlite.Connection, stream: str, incoming: int = 0, limits: Limits = DEFAULT_LIMITS) -> bool:
    try:
        await check_capacity(db, stream, incoming, limits)
    except OutboxFull:
        return False
    return True


async def usage(db: aiosqlite.Connection, limits: Limits = DEFAULT_LIMITS) -> dict[str, dict[str, int | None]]:
    """Bytes waiting per data class with its limit, for the status bar and HQ."""
    return Snapshot(await streams(db), None, []).usage(limits)


async def make_room_for_positions(db: aiosqlite.Connection, limits: Limits = DEFAULT_LIMITS) -> int:
    """Inside the caller's transaction: past the GPS limit, thin the oldest unsent half.

    Every other point is emptied (payload ``b""``), never deleted, so sequence
    numbers stay dense and HQ's cumulative ack keeps moving.  The newest point
    is never thinned.  Returns how many points were thinned.
    """
    limit = limits.limit("pos")
    if limit is None:
        return 0
    async with db.execute("SELECT bytes, next_seq FROM outbox_stream WHERE stream = 'pos'") as cur:
        row = await cur.fetchone()
    if row is None or row[0] <= limit:
        return 0
    async with db.execute(
        "SELECT seq, length(payload) FROM (SELECT seq, payload, row_number() OVER (ORDER BY seq) AS rn FROM outbox"
        " WHERE stream = 'pos' AND length(payload) > 0 AND seq < ?) WHERE rn % 2 = 0",
        (row[1] - 1,),
    ) as cur:
        victims = [(int(r[0]), int(r[1])) async for r in cur]
    victims = victims[: max(1, len(victims) // 2)]
    freed = sum(n for _, n in victims)
    await db.executemany("UPDATE outbox SET payload = x'' WHERE stream = 'pos' AND seq = ?", [(s,) for s, _ in victims])
    await db.execute("UPDATE outbox_stream SET bytes = bytes - ? WHERE stream = 'pos'", (freed,))
    return len(victims)


def _mark_sent_sync(conn: sqlite3.Connection, stream: str, first: int, last: int, now: float) -> None:
    conn.execute("UPDATE sync_ledger SET sent = ? WHERE stream = ? AND seq BETWEEN ? AND ? AND sent IS NULL", (now, stream, first, last))


async def mark_sent(db: aiosqlite.Connection, stream: str, first: int, last: int, now: float) -> None:
    if stream in LEDGER_STREAMS:
        # One hop, and no fsync: this was one fsync per batch on the drain's path, and a "sent" time lost to a
        # power cut costs nothing (the batch goes again, HQ deduplicates; apply_ack fills it in from the ack).
        await run_transaction_unsynced(db, _mark_sent_sync, stream, first, last, now)


async def ledger(db: aiosqlite.Connection, stream: str, seq: int) -> dict[str, object] | None:
    """The sync ledger of one item: when it was created, first sent, acknowledged by HQ."""
    async with db.execute("SELECT created, sent, acked FROM sync_ledger WHERE stream = ? AND seq = ?", (stream, seq)) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    async with db.execute("SELECT reason, at FROM quarantine WHERE stream = ? AND seq = ?", (stream, seq)) as cur:
        q = await cur.fetchone()
    state = "quarantined" if q else "acknowledged" if row[2] else "sent" if row[1] else "created"
    return {"stream": stream, "seq": seq, "created": row[0], "sent": row[1], "acknowledged": row[2], "state": state,
            "quarantine": None if q is None else {"reason": q[0], "at": q[1]}}


async def record_quarantine(db: aiosqlite.Connection, stream: str, seq: int, reason: str, now: float) -> None:
    async with transaction(db):
        await db.execute("INSERT OR IGNORE INTO quarantine(stream, seq, reason, at) VALUES (?, ?, ?, ?)", (stream, seq, reason, now))


async def quarantined(db: aiosqlite.Connection) -> list[dict[str, object]]:
    async with db.execute("SELECT stream, seq, reason, at FROM quarantine ORDER BY at") as cur:
        return [{"stream": r[0], "seq": r[1], "reason": r[2], "at": r[3]} async for r in cur]


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


@dataclass(frozen=True)
class Snapshot:
    """Everything the status bar shows about the outbox, read in one hop (it is on every page)."""

    states: dict[str, StreamState]
    oldest_pending: float | None
    quarantined: list[dict[str, object]]

    def usage(self, limits: Limits = DEFAULT_LIMITS) -> dict[str, dict[str, int | None]]:
        names = sorted(set(self.states) | set(limits.per_stream))
        return {
            n: {"bytes": self.states[n].bytes if n in self.states else 0, "limit": limits.limit(n),
                "pending": self.states[n].pending if n in self.states else 0}
            for n in names
        }


def snapshot_sync(conn: sqlite3.Connection) -> Snapshot:
    states = {r[0]: StreamState(r[0], r[1], r[2], r[3], r[4])
              for r in conn.execute("SELECT stream, next_seq, acked, acked_at, bytes FROM outbox_stream")}
    # The head of each stream, not MIN over the whole table: a backlog of 100 000 points is not scanned on every page.
    oldest = conn.execute(
        "SELECT MIN((SELECT created FROM outbox o WHERE o.stream = s.stream ORDER BY seq LIMIT 1)) FROM outbox_stream s"
    ).fetchone()[0]
    quarantine = [{"stream": r[0], "seq": r[1], "reason": r[2], "at": r[3]}
                  for r in conn.execute("SELECT stream, seq, reason, at FROM quarantine ORDER BY at")]
    return Snapshot(states, None if oldest is None else float(oldest), quarantine)


async def snapshot(db: aiosqlite.Connection) -> Snapshot:
    return await run_sync(db, snapshot_sync)


async def oldest_pending(db: aiosqlite.Connection) -> float | None:
    async with db.execute("SELECT MIN(created) FROM outbox") as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _apply_ack_sync(conn: sqlite3.Connection, stream: str, upto: int, now: float) -> bool:
    row = conn.execute("SELECT acked, next_seq FROM outbox_stream WHERE stream = ?", (stream,)).fetchone()
    if row is None:
        return False
    acked, next_seq = row
    # HQ cannot hold what we never produced: a larger ack is forged or from a wiped node.
    upto = min(upto, next_seq - 1)
    if upto <= acked:
        return False
    freed_row = conn.execute("SELECT COALESCE(SUM(length(payload)), 0) FROM outbox WHERE stream = ? AND seq <= ?", (stream, upto)).fetchone()
    freed = int(freed_row[0]) if freed_row else 0
    conn.execute("DELETE FROM outbox WHERE stream = ? AND seq <= ?", (stream, upto))
    conn.execute("UPDATE outbox_stream SET acked = ?, acked_at = ?, bytes = MAX(0, bytes - ?) WHERE stream = ?", (upto, now, freed, stream))
    if stream in LEDGER_STREAMS:
        conn.execute(
            "UPDATE sync_ledger SET acked = ?, sent = COALESCE(sent, ?) WHERE stream = ? AND seq > ? AND seq <= ?",
            (now, now, stream, acked, upto),
        )
    return True


async def apply_ack(db: aiosqlite.Connection, stream: str, upto: int, now: float) -> bool:
    """Prune what HQ holds; cumulative and idempotent, in its own transaction (one hop).  True if it moved."""
    return await run_transaction(db, _apply_ack_sync, stream, upto, now)


async def allocate_seq(db: aiosqlite.Connection, stream: str) -> int:
    """A sequence number for a fire-and-forget item (an SBD heartbeat): counted as sent and done."""
    async with transaction(db):
        await db.execute("INSERT OR IGNORE INTO outbox_stream(stream) VALUES (?)", (stream,))
        async with db.execute(
            "UPDATE outbox_stream SET next_seq = next_seq + 1, acked = next_seq WHERE stream = ? RETURNING next_seq - 1",
            (stream,),
        ) as cur:
            row = await cur.fetchone()
    assert row is not None
    return int(row[0])
