"""HQ's database: every item exactly once, keyed by (node, stream, seq).

``store_envelope`` commits the items and returns the highest sequence
number up to which HQ holds everything without a gap; only that number is
acknowledged, so a lost batch is resent instead of skipped.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

import aiosqlite

from sync.clock import Clock
from sync.db import open_db, transaction
from sync.migrate import migrate

from . import audit
from sync.envelope import Envelope

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
CREATE TABLE items (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    payload BLOB NOT NULL, hlc INTEGER NOT NULL, via TEXT NOT NULL, received REAL NOT NULL,
    PRIMARY KEY (node_id, stream, seq)
) WITHOUT ROWID;
CREATE TABLE stream_state (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, contiguous INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, stream)
) WITHOUT ROWID;
CREATE TABLE node_state (
    node_id TEXT PRIMARY KEY, last_seen REAL, lat REAL, lon REAL, pos_time REAL,
    link TEXT, status TEXT, status_at REAL
);
CREATE TABLE records (
    node_id TEXT NOT NULL, seq INTEGER NOT NULL, record_id TEXT NOT NULL UNIQUE, number TEXT NOT NULL,
    service_code TEXT NOT NULL, created REAL NOT NULL, sealed TEXT NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE TABLE rejections (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, claimed_node TEXT, channel TEXT, reason TEXT
);
""",
]

POS_STRUCT = struct.Struct(">dii")


class HQStore:
    def __init__(self, db: aiosqlite.Connection, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    @classmethod
    async def open(cls, path: Path, clock: Clock) -> HQStore:
        db = await open_db(path)
        await migrate(db, "hq", MIGRATIONS)
        await migrate(db, "hq_audit", audit.MIGRATIONS)
        return cls(db, clock)

    async def close(self) -> None:
        await self.db.close()

    async def store_envelope(self, env: Envelope, via: str) -> int:
        now = self.clock.now()
        async with transaction(self.db):
            for i, item in enumerate(env.items):
                seq = env.first_seq + i
                cur = await self.db.execute(
                    "INSERT OR IGNORE INTO items(node_id, stream, seq, payload, hlc, via, received) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (env.node_id, env.stream, seq, item, env.hlc, via, now),
                )
                if cur.rowcount:
                    await self._apply(env.node_id, env.stream, seq, item)
            await self.db.execute(
                "INSERT INTO node_state(node_id, last_seen, link) VALUES (?, ?, ?)"
                " ON CONFLICT(node_id) DO UPDATE SET last_seen = excluded.last_seen, link = excluded.link",
                (env.node_id, now, via),
            )
            await self.db.execute("INSERT OR IGNORE INTO stream_state(node_id, stream) VALUES (?, ?)", (env.node_id, env.stream))
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
            await self.db.execute("UPDATE stream_state SET contiguous = ? WHERE node_id = ? AND stream = ?", (contiguous, env.node_id, env.stream))
            if env.stream == "audit":
                for problem in await audit.verify_new(self.db, env.node_id, now):
                    log.warning("audit chain of %s: %s", env.node_id, problem)
        return contiguous

    async def _apply(self, node_id: str, stream: str, seq: int, item: bytes) -> None:
        """Project a newly stored item into the tables the dashboard reads."""
        if stream == "pos" and len(item) == POS_STRUCT.size:
            t, lat, lon = POS_STRUCT.unpack(item)
            await self.db.execute(
                "INSERT INTO node_state(node_id, lat, lon, pos_time) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(node_id) DO UPDATE SET lat = excluded.lat, lon = excluded.lon, pos_time = excluded.pos_time"
                " WHERE node_state.pos_time IS NULL OR excluded.pos_time >= node_state.pos_time",
                (node_id, lat / 1e7, lon / 1e7, t),
            )
        elif stream == "rec":
            try:
                doc = json.loads(item)
                await self.db.execute(
                    "INSERT OR IGNORE INTO records(node_id, seq, record_id, number, service_code, created, sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (node_id, seq, doc["id"], doc["number"], doc["service_code"], doc["created"], item.decode()),
                )
            except (ValueError, KeyError) as exc:
                log.warning("record %s/%d kept raw, not projected: %s", node_id, seq, exc)

    async def record_rejection(self, claimed_node: str, channel: str, reason: str) -> None:
        async with transaction(self.db):
            await self.db.execute("INSERT INTO rejections(at, claimed_node, channel, reason) VALUES (?, ?, ?, ?)", (self.clock.now(), claimed_node, channel, reason))

    async def record_status(self, node_id: str, state: str, at: float) -> None:
        async with transaction(self.db):
            await self.db.execute(
                "INSERT INTO node_state(node_id, status, status_at) VALUES (?, ?, ?)"
                " ON CONFLICT(node_id) DO UPDATE SET status = excluded.status, status_at = excluded.status_at",
                (node_id, state, at),
            )

    async def fleet(self) -> list[dict[str, Any]]:
        async with self.db.execute(
            "SELECT n.node_id, n.last_seen, n.lat, n.lon, n.pos_time, n.status, n.link,"
            " (SELECT COUNT(*) FROM records r WHERE r.node_id = n.node_id) FROM node_state n ORDER BY n.node_id"
        ) as cur:
            return [
                {"node_id": r[0], "last_seen": r[1], "lat": r[2], "lon": r[3], "position_time": r[4], "status": r[5] or "unknown", "link": r[6], "records": r[7]}
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
        ):
            async with self.db.execute(sql) as cur:
                row = await cur.fetchone()
            out[key] = int(row[0]) if row else 0
        return out
