"""HQ's database: every item exactly once, keyed by (node, stream, seq).

``store_envelope`` commits the items and returns the highest sequence
number up to which HQ holds everything without a gap; only that number is
acknowledged, so a lost batch is resent instead of skipped.

An item HQ can never apply (malformed JSON, unknown schema) is still stored
and counted as held, so it does not block the stream behind it, but it goes
to ``quarantine`` instead of the projections; the ack tells the node.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

from sync.clock import Clock
from sync import poscodec
from sync.envelope import Envelope
from sync.errors import EnvelopeError, SyncError
from sync.linkmgr import unpack_heartbeat
from sync.ingest import StoreResult

from . import audit
from .db import DB, backend, connect, migrate, transaction

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
CREATE TABLE items (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,
    payload {BLOB} NOT NULL, hlc BIGINT NOT NULL, via TEXT NOT NULL, received DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, stream, seq)
) {WITHOUT_ROWID};
CREATE TABLE stream_state (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, contiguous BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, stream)
) {WITHOUT_ROWID};
CREATE TABLE node_state (
    node_id TEXT PRIMARY KEY, last_seen DOUBLE PRECISION, lat DOUBLE PRECISION, lon DOUBLE PRECISION, pos_time DOUBLE PRECISION,
    link TEXT, status TEXT, status_at DOUBLE PRECISION
);
CREATE TABLE records (
    node_id TEXT NOT NULL, seq BIGINT NOT NULL, record_id TEXT NOT NULL UNIQUE, number TEXT NOT NULL,
    service_code TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, sealed TEXT NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE TABLE rejections (
    id {ID}, at DOUBLE PRECISION NOT NULL, claimed_node TEXT, channel TEXT, reason TEXT
);
""",
    # 2: quarantine of items HQ permanently refuses; per-class byte accounting; command log
    """
CREATE TABLE quarantine (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, stream, seq)
) {WITHOUT_ROWID};
CREATE TABLE class_bytes (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, bytes BIGINT NOT NULL DEFAULT 0, items BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, stream)
) {WITHOUT_ROWID};
CREATE TABLE down_seq (node_id TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (node_id, stream)) {WITHOUT_ROWID};
ALTER TABLE node_state ADD COLUMN depth TEXT;
ALTER TABLE node_state ADD COLUMN trusted_time BIGINT
""",
    # 3: applicants (sealed) and citizens' ratings, as the van sends them
    """
CREATE TABLE applicants (
    node_id TEXT NOT NULL, seq BIGINT NOT NULL, record_id TEXT NOT NULL UNIQUE, created DOUBLE PRECISION NOT NULL, sealed TEXT NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE TABLE ratings (
    node_id TEXT NOT NULL, seq BIGINT NOT NULL, application_id TEXT NOT NULL, score BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL,
    comment_sealed TEXT, PRIMARY KEY (node_id, seq)
);
ALTER TABLE records ADD COLUMN package_code TEXT
""",
]

# Record schemas HQ knows how to project; anything else is quarantined.
RECORD_TYPES = frozenset({"application", "applicant", "rating"})

POS_STRUCT = struct.Struct(">dii")


def _text(value: object) -> str | None:
    """An optional TEXT column's value typed as the column is (what SQLite's TEXT affinity would store)."""
    return None if value is None else str(value)


class HQStore:
    def __init__(self, db: DB, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    @property
    def backend(self) -> str:
        return backend(self.db)

    @classmethod
    async def open(cls, target: Path | str, clock: Clock) -> HQStore:
        """``target``: the SQLite file, or a ``postgresql://`` URL (see hq/db.py)."""
        db = await connect(target)
        try:
            await migrate(db, "hq", MIGRATIONS)
            await migrate(db, "hq_audit", audit.MIGRATIONS)
        except BaseException:
            await db.close()
            raise
        return cls(db, clock)

    async def close(self) -> None:
        await self.db.close()

    async def store_envelope(self, env: Envelope, via: str) -> StoreResult:
        now = self.clock.now()
        res = StoreResult(0)
        # One writer per (node, stream): on PostgreSQL, workers ingest other vans in parallel.
        async with transaction(self.db, f"{env.node_id}/{env.stream}"):
            await self.db.execute(
                "INSERT INTO node_state(node_id, last_seen, link, trusted_time) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(node_id) DO UPDATE SET last_seen = excluded.last_seen, link = excluded.link,"
                " trusted_time = excluded.trusted_time",
                (env.node_id, now, via, int(env.trusted_time)),
            )
            last = env.first_seq + len(env.items) - 1
            async with self.db.execute(
                "SELECT seq FROM items WHERE node_id = ? AND stream = ? AND seq BETWEEN ? AND ?",
                (env.node_id, env.stream, env.first_seq, last),
            ) as cur:
                held = {int(r[0]) async for r in cur}
            fresh = [(env.first_seq + i, item) for i, item in enumerate(env.items) if env.first_seq + i not in held]
            res.duplicates = len(env.items) - len(fresh)
            res.new = len(fresh)
            await self.db.executemany(
                "INSERT INTO items(node_id, stream, seq, payload, hlc, via, received) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(env.node_id, env.stream, seq, item, env.hlc, via, now) for seq, item in fresh],
            )
            # Positions: only the newest of a batch moves the fleet map; each is still checked.
            newest_pos = max((seq for seq, item in fresh if item), default=None) if env.stream == "pos" else None
            for seq, item in fresh:
                reason = await self._apply(env.node_id, env.stream, seq, item, project=env.stream != "pos" or seq == newest_pos)
                if reason is not None:
                    res.quarantined.append((seq, reason))
                    await self.db.execute(
                        "INSERT INTO quarantine(node_id, stream, seq, reason, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (env.node_id, env.stream, seq, reason, now),
                    )
            if res.new:
                await self.db.execute(
                    "INSERT INTO class_bytes(node_id, stream, bytes, items) VALUES (?, ?, ?, ?) ON CONFLICT(node_id, stream)"
                    " DO UPDATE SET bytes = class_bytes.bytes + excluded.bytes, items = class_bytes.items + excluded.items",
                    (env.node_id, env.stream, sum(len(x) for x in env.items), res.new),
                )
            # (each statement is a round trip on PostgreSQL: no separate "make sure the row exists")
            async with self.db.execute("SELECT contiguous FROM stream_state WHERE node_id = ? AND stream = ?", (env.node_id, env.stream)) as cur2:
                row = await cur2.fetchone()
            contiguous = int(row[0]) if row else 0
            async with self.db.execute(
                "SELECT seq FROM items WHERE node_id = ? AND stream = ? AND seq > ? ORDER BY seq", (env.node_id, env.stream, contiguous)
            ) as cur3:
                async for (seq,) in cur3:
                    if seq != contiguous + 1:
                        break
                    contiguous = seq
            await self.db.execute(
                "INSERT INTO stream_state(node_id, stream, contiguous) VALUES (?, ?, ?)"
                " ON CONFLICT(node_id, stream) DO UPDATE SET contiguous = excluded.contiguous",
                (env.node_id, env.stream, contiguous),
            )
            if env.stream == "audit":
                for problem in await audit.verify_new(self.db, env.node_id, now):
                    log.warning("audit chain of %s: %s", env.node_id, problem)
        res.contiguous = contiguous
        return res

    async def _apply(self, node_id: str, stream: str, seq: int, item: bytes, project: bool = True) -> str | None:
        """Project a newly stored item into the tables the dashboard reads; a reason if it cannot be."""
        if stream == "pos":
            if not item:
                return None  # thinned on the node
            try:
                p = poscodec.unpack_position(item)
            except EnvelopeError as exc:
                return str(exc)
            if not project:
                return None
            await self.db.execute(
                "INSERT INTO node_state(node_id, lat, lon, pos_time) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(node_id) DO UPDATE SET lat = excluded.lat, lon = excluded.lon, pos_time = excluded.pos_time"
                " WHERE node_state.pos_time IS NULL OR excluded.pos_time >= node_state.pos_time",
                (node_id, p.lat, p.lon, p.time),
            )
        elif stream == "status":
            try:
                hb = unpack_heartbeat(item)
            except SyncError as exc:
                return str(exc)
            # Only the newest heartbeat held says what waits now: a late one fills history, raises no backlog alert.
            await self.db.execute(
                "UPDATE node_state SET depth = ? WHERE node_id = ?"
                " AND ? >= (SELECT MAX(seq) FROM items WHERE node_id = ? AND stream = 'status')",
                (json.dumps(hb.depth), node_id, seq, node_id),
            )
            if hb.has_fix:
                await self.db.execute(
                    "UPDATE node_state SET lat = ?, lon = ?, pos_time = ? WHERE node_id = ? AND (pos_time IS NULL OR pos_time <= ?)",
                    (hb.lat, hb.lon, hb.time, node_id, hb.time),
                )
        elif stream == "rec":
            try:
                doc = json.loads(item)
                if not isinstance(doc, dict):
                    return "record is not a JSON object"
                kind = doc.get("type", "application")
                if kind not in RECORD_TYPES:
                    return f"unknown record schema {str(kind)[:40]!r}"
                if kind == "application":
                    await self.db.execute(
                        "INSERT INTO records(node_id, seq, record_id, number, service_code, created, sealed, package_code)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (node_id, seq, str(doc["id"]), str(doc["number"]), str(doc["service_code"]), float(doc["created"]),
                         item.decode(), _text(doc.get("package"))),
                    )
                elif kind == "applicant":
                    await self.db.execute(
                        "INSERT INTO applicants(node_id, seq, record_id, created, sealed) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (node_id, seq, str(doc["id"]), float(doc["created"]), item.decode()),
                    )
                else:
                    score = int(doc["score"])
                    if not 1 <= score <= 5:
                        return f"rating score {score} out of 1..5"
                    await self.db.execute(
                        "INSERT INTO ratings(node_id, seq, application_id, score, at, comment_sealed) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (node_id, seq, str(doc["application_id"]), score, float(doc["at"]), _text(doc.get("comment_sealed"))),
                    )
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("record %s/%d quarantined: %s", node_id, seq, type(exc).__name__)
                return f"malformed record: {type(exc).__name__}"
        return None

    async def quarantined(self) -> list[dict[str, Any]]:
        async with self.db.execute("SELECT node_id, stream, seq, reason, at FROM quarantine ORDER BY at") as cur:
            return [{"node_id": r[0], "stream": r[1], "seq": r[2], "reason": r[3], "at": r[4]} async for r in cur]

    async def class_bytes(self) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        async with self.db.execute("SELECT node_id, stream, bytes, items FROM class_bytes") as cur:
            async for node, stream, b, n in cur:
                out.setdefault(node, {})[stream] = {"bytes": b, "items": n}
        return out

    async def next_down_seq(self, node_id: str, stream: str) -> int:
        """Dense per-node downlink numbering (for commands, assignments; the catalogue's version)."""
        async with transaction(self.db):
            await self.db.execute(
                "INSERT INTO down_seq(node_id, stream, seq) VALUES (?, ?, 1) ON CONFLICT(node_id, stream) DO UPDATE SET seq = down_seq.seq + 1",
                (node_id, stream),
            )
            async with self.db.execute("SELECT seq FROM down_seq WHERE node_id = ? AND stream = ?", (node_id, stream)) as cur:
                row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def items(self, node_id: str, stream: str) -> list[tuple[int, bytes]]:
        async with self.db.execute("SELECT seq, payload FROM items WHERE node_id = ? AND stream = ? ORDER BY seq", (node_id, stream)) as cur:
            return [(int(r[0]), bytes(r[1])) async for r in cur]

    async def record_rejection(self, claimed_node: str, channel: str, reason: str) -> None:
        async with transaction(self.db):
            await self.db.execute("INSERT INTO rejections(at, claimed_node, channel, reason) VALUES (?, ?, ?, ?)", (self.clock.now(), claimed_node, channel, reason))

    async def record_status(self, node_id: str, state: str, at: float, depth: dict[str, Any] | None = None) -> None:
        async with transaction(self.db):
            await self.db.execute(
                "INSERT INTO node_state(node_id, status, status_at, depth) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(node_id) DO UPDATE SET status = excluded.status, status_at = excluded.status_at,"
                " depth = COALESCE(excluded.depth, node_state.depth)",
                (node_id, state, at, None if depth is None else json.dumps(depth)),
            )

    async def fleet(self) -> list[dict[str, Any]]:
        async with self.db.execute(
            "SELECT n.node_id, n.last_seen, n.lat, n.lon, n.pos_time, n.status, n.link,"
            " (SELECT COUNT(*) FROM records r WHERE r.node_id = n.node_id), n.depth, n.trusted_time"
            " FROM node_state n ORDER BY n.node_id"
        ) as cur:
            return [
                {"node_id": r[0], "last_seen": r[1], "lat": r[2], "lon": r[3], "position_time": r[4], "status": r[5] or "unknown",
                 "link": r[6], "records": r[7], "outbox_depth": json.loads(r[8]) if r[8] else {},
                 "trusted_time": None if r[9] is None else bool(r[9])}
                async for r in cur
            ]

    async def stats(self) -> dict[str, int]:
        out = {}
        for key, sql in (
            ("records", "SELECT COUNT(*) FROM records"),
            ("positions", "SELECT COUNT(*) FROM items WHERE stream = 'pos'"),
            ("nodes", "SELECT COUNT(*) FROM node_state"),
            ("rejected", "SELECT COUNT(*) FROM rejections"),
            ("audit_alerts", "SELECT COUNT(*) FROM audit_alerts"),
            ("quarantined", "SELECT COUNT(*) FROM quarantine"),
            ("applicants", "SELECT COUNT(*) FROM applicants"),
            ("ratings", "SELECT COUNT(*) FROM ratings"),
        ):
            async with self.db.execute(sql) as cur:
                row = await cur.fetchone()
            out[key] = int(row[0]) if row else 0
        return out
