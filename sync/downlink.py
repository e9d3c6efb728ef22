"""Downlink, both ends: HQ builds signed messages, the node applies each exactly once.

Every downlink item is a JSON object with an ``id`` (unique per HQ), and
commands carry ``expires`` (Unix seconds).  The node keeps the ids it has
applied in ``downlink_applied``; marking an id applied and enqueueing its
acknowledgement (an ``evt`` item ``{"type": "down_ack", ...}``) happen in
one transaction, so HQ hears about each application exactly once.  The
callback runs before that transaction: after a crash in between it runs
again, so edge's callbacks must be idempotent (lock, shred, sync-now are).

Edge registers callbacks (``Downlink.register(kind, fn)``); sync never
imports edge.

Assignments and pre-registrations carry the person sealed to the node's
X25519 key (edge/visits.py, edge/prereg.py); the envelope itself is signed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kit.timesource import TimeSource

from . import outbox, safejson
from .clock import Clock
from .db import transaction
from .envelope import Envelope, encode
from .errors import EnvelopeError
from .migrate import migrate

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
CREATE TABLE downlink_applied (
    kind TEXT NOT NULL, id TEXT NOT NULL, at REAL NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE catalog_version (one INTEGER PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL);
""",
    # 2: commands whose expiry waits for trusted time (kit/timesource.py)
    """
CREATE TABLE downlink_deferred (
    stream TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (stream, id)
) WITHOUT ROWID;
""",
]

COMMANDS = frozenset({"sync_now", "lock", "shred", "rotate_key", "hq_seal_key"})

Handler = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Applied:
    kind: str
    id: str
    result: str  # "applied", "expired", "unknown", "failed", "duplicate", "deferred" (waits for trusted time)


class Downlink:
    """Node side: verified downlink items in, callbacks out, acks enqueued."""

    def __init__(self, db: aiosqlite.Connection, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._handlers: dict[str, Handler] = {}
        self.on_enqueued: list[Callable[[], None]] = []

    async def create_schema(self) -> None:
        await migrate(self.db, "downlink", MIGRATIONS)

    def register(self, kind: str, handler: Handler) -> None:
        """``kind`` is a command name (``lock`` ...), ``assign``, ``prereg`` or ``catalog``."""
        self._handlers[kind] = handler

    async def catalog_version(self) -> int:
        async with self.db.execute("SELECT version FROM catalog_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def apply_catalog(self, env: Envelope) -> bool:
        """A retained catalogue: applied only if newer (its version is the envelope's seq)."""
        if env.first_seq <= await self.catalog_version():
            return False
        handler = self._handlers.get("catalog")
        doc = _parse(env.items[0])
        doc["version"] = env.first_seq  # the signed envelope's seq is the version, whatever the body says
        if handler is not None:
            await handler(doc)
        async with transaction(self.db):
            await self.db.execute(
                "INSERT INTO catalog_version(one, version) VALUES (1, ?) ON CONFLICT(one) DO UPDATE SET version = excluded.version",
                (env.first_seq,),
            )
        return True

    async def apply(self, env: Envelope) -> list[Applied]:
        out = []
        for raw in env.items:
            doc = _parse(raw)
            out.append(await self._apply_one(env.stream, doc))
        return out

    async def _apply_one(self, stream: str, doc: dict[str, Any]) -> Applied:
        item_id = str(doc.get("id", ""))
        if not item_id:
            raise EnvelopeError("downlink item without an id")
        kind = str(doc.get("kind", "")) if stream == "cmd" else stream
        async with self.db.execute("SELECT result FROM downlink_applied WHERE kind = ? AND id = ?", (stream, item_id)) as cur:
            if await cur.fetchone() is not None:
                return Applied(kind, item_id, "duplicate")
        now = self.clock.now()
        if stream == "cmd" and isinstance(self.clock, TimeSource) and not self.clock.trusted:
            # An untrusted clock cannot say whether the command expired: keep it until trusted time comes (apply_deferred).
            async with transaction(self.db):
                await self.db.execute("INSERT OR IGNORE INTO downlink_deferred(stream, id, doc, at) VALUES (?, ?, ?, ?)",
                                      (stream, item_id, json.dumps(doc, separators=(",", ":")), now))
            log.info("command %s %s waits for trusted time to judge its expiry", kind, item_id)
            return Applied(kind, item_id, "deferred")
        expires = doc.get("expires")
        handler = self._handlers.get(kind)
        if stream == "cmd" and (not isinstance(expires, (int, float)) or expires < now):
            result = "expired"
        elif (stream == "cmd" and kind not in COMMANDS) or handler is None:
            result = "unknown"
        else:
            try:
                await handler(doc)
                result = "applied"
            except sqlite3.OperationalError:
                raise  # transient (locked, disk): not recorded, so the broker delivers it again
            except Exception as exc:  # noqa: BLE001 - a failing edge callback must not stop the link
                log.error("downlink %s %s failed: %s", kind, item_id, type(exc).__name__)
                result = "failed"
        ack = json.dumps({"type": "down_ack", "stream": stream, "kind": kind, "id": item_id, "result": result, "at": now},
                         separators=(",", ":")).encode()
        async with transaction(self.db):
            await self.db.execute(
                "INSERT OR IGNORE INTO downlink_applied(kind, id, at, result) VALUES (?, ?, ?, ?)", (stream, item_id, now, result)
            )
            await outbox.enqueue(self.db, "evt", ack, now)
        for cb in self.on_enqueued:
            cb()
        return Applied(kind, item_id, result)

    async def apply_deferred(self) -> int:
        """Judge the commands that waited for trusted time (a no-op while there is none)."""
        if isinstance(self.clock, TimeSource) and not self.clock.trusted:
            return 0
        async with self.db.execute("SELECT stream, id, doc FROM downlink_deferred ORDER BY at") as cur:
            rows = [(str(r[0]), str(r[1]), str(r[2])) for r in await cur.fetchall()]
        for stream, item_id, raw in rows:
            await self._apply_one(stream, _parse(raw.encode()))
            async with transaction(self.db):
                await self.db.execute("DELETE FROM downlink_deferred WHERE stream = ? AND id = ?", (stream, item_id))
        return len(rows)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        doc = safejson.loads(raw)
    except ValueError as exc:
        raise EnvelopeError("downlink item is not JSON") from exc
    if not isinstance(doc, dict):
        raise EnvelopeError("downlink item is not an object")
    return doc


# -- HQ side -----------------------------------------------------------------

def command(cmd_id: str, kind: str, expires: float, **args: Any) -> dict[str, Any]:
    if kind not in COMMANDS:
        raise ValueError(f"unknown command {kind!r}")
    return {"id": cmd_id, "kind": kind, "expires": expires, "args": args}


def build(hq_key: Ed25519PrivateKey, node_id: str, stream: str, seq: int, docs: list[dict[str, Any]], hlc: int) -> bytes:
    """One signed downlink envelope (``node_id`` is ``all`` for the catalogue)."""
    items = tuple(json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode() for d in docs)
    return encode(Envelope(node_id, stream, seq, items, hlc, downlink=True), hq_key)
