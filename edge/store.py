"""The node's encrypted record store (aiosqlite, WAL, synchronous=FULL).

One transaction writes a record and its outbox entry; the caller sees the
application number only after COMMIT returned.  Sensitive fields are
sealed (edge.crypto) before they reach SQLite; the node key lives only in
memory, unwrapped from a keyslot when an administrator logs in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from sync import outbox, poscodec
from sync.clock import Clock
from sync.db import open_db, transaction
from sync.migrate import migrate

from . import crypto
from .errors import CryptoError, StoreLocked

log = logging.getLogger(__name__)

MIGRATIONS: list[str] = [
    # 1: walking skeleton
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE keyslots (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('admin', 'hq')),
        username TEXT UNIQUE,
        role TEXT,
        salt BLOB NOT NULL,
        n INTEGER NOT NULL,
        wrapped BLOB NOT NULL
    );
    CREATE TABLE applications (
        id TEXT PRIMARY KEY,
        number TEXT NOT NULL UNIQUE,
        service_code TEXT NOT NULL,
        created REAL NOT NULL,
        created_by TEXT NOT NULL,
        version INTEGER NOT NULL,
        fields BLOB NOT NULL,
        wrap_hq BLOB NOT NULL,
        wrap_node BLOB,
        rnokpp_index BLOB NOT NULL,
        outbox_seq INTEGER NOT NULL
    );
    CREATE INDEX applications_rnokpp ON applications(rnokpp_index);
    CREATE TABLE day_counter (day TEXT PRIMARY KEY, n INTEGER NOT NULL);
    """,
]

SENSITIVE_APPLICATION_FIELDS = ("surname", "given_name", "rnokpp")
POS_STRUCT = struct.Struct(">dii")  # GPS time, lat and lon in 1e-7 degrees


@dataclass(frozen=True)
class Account:
    username: str
    role: str


@dataclass(frozen=True)
class SavedApplication:
    id: str
    number: str


def _pack_fields(fields: dict[str, bytes]) -> bytes:
    return json.dumps({k: base64.b64encode(v).decode() for k, v in sorted(fields.items())}).encode()


def _unpack_fields(blob: bytes) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in json.loads(blob).items()}


class Store:
    def __init__(self, db: aiosqlite.Connection, node_id: str, hq_seal_public: X25519PublicKey, clock: Clock) -> None:
        self.db = db
        self.node_id = node_id
        self.hq_seal_public = hq_seal_public
        self.clock = clock
        self._node_key: bytes | None = None
        self._index_key: bytes | None = None
        self.on_enqueued: list[Callable[[], None]] = []

    @classmethod
    async def open(cls, path: Path, node_id: str, hq_seal_public: X25519PublicKey, clock: Clock) -> Store:
        db = await open_db(path)
        store = cls(db, node_id, hq_seal_public, clock)
        await store._migrate()
        return store

    async def close(self) -> None:
        self.lock()
        await self.db.close()

    async def _migrate(self) -> None:
        await migrate(self.db, "store", MIGRATIONS)
        await outbox.create_schema(self.db)

    # -- keys --------------------------------------------------------------
    async def import_keyslots(self, slots: list[dict[str, object]]) -> bool:
        """First start from a bundle: copy its keyslots.  No-op once any exist."""
        async with transaction(self.db):
            async with self.db.execute("SELECT COUNT(*) FROM keyslots") as cur:
                row = await cur.fetchone()
            if row and row[0]:
                return False
            for s in slots:
                await self.db.execute(
                    "INSERT INTO keyslots(kind, username, role, salt, n, wrapped) VALUES (?, ?, ?, ?, ?, ?)",
                    (s["kind"], s.get("username"), s.get("role"), s["salt"], s["n"], s["wrapped"]),
                )
        return True

    @property
    def locked(self) -> bool:
        return self._node_key is None

    def lock(self) -> None:
        self._node_key = None
        self._index_key = None

    async def unlock(self, username: str, password: str) -> Account | None:
        """Check the password by opening its keyslot; on success the store is unlocked."""
        async with self.db.execute("SELECT role, salt, n, wrapped FROM keyslots WHERE kind = 'admin' AND username = ?", (username,)) as cur:
            row = await cur.fetchone()
        if row is None:
            # Same cost as a real attempt, so a timing probe cannot list usernames.
            await asyncio.get_running_loop().run_in_executor(None, crypto.kek_from_password, password, b"\0" * 16)
            return None
        role, salt, n, wrapped = row
        kek = await asyncio.get_running_loop().run_in_executor(None, crypto.kek_from_password, password, bytes(salt), int(n))
        ctx = f"keyslot|{self.node_id}|admin|{username}".encode()
        try:
            node_key = crypto.unwrap_with_key(bytes(wrapped), kek, ctx)
        except CryptoError:
            return None
        self._node_key = node_key
        self._index_key = crypto.derive_subkey(node_key, "blind-index")
        return Account(username, str(role))

    def _require_key(self) -> bytes:
        if self._node_key is None:
            raise StoreLocked("store is locked until an administrator logs in")
        return self._node_key

    # -- intake ------------------------------------------------------------
    async def create_application(self, surname: str, given_name: str, rnokpp: str, service_code: str, actor: str) -> SavedApplication:
        node_key = self._require_key()
        assert self._index_key is not None
        app_id = uuid.uuid4().hex
        now = self.clock.now()
        version = 1
        sealed = crypto.seal(
            "applications", app_id, version, {"surname": surname, "given_name": given_name, "rnokpp": rnokpp}, self.hq_seal_public, node_key
        )
        index = crypto.blind_index(self._index_key, "rnokpp", rnokpp)
        day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%d")
        async with transaction(self.db):
            await self.db.execute(
                "INSERT INTO day_counter(day, n) VALUES (?, 1) ON CONFLICT(day) DO UPDATE SET n = n + 1", (day,)
            )
            async with self.db.execute("SELECT n FROM day_counter WHERE day = ?", (day,)) as cur:
                row = await cur.fetchone()
            assert row is not None
            number = f"{self.node_id.upper()}-{day}-{int(row[0]):04d}"
            wire = json.dumps(
                {
                    "type": "application", "id": app_id, "number": number, "service_code": service_code,
                    "created": now, "version": version, "fields": json.loads(_pack_fields(sealed.fields)),
                    "wrap_hq": base64.b64encode(sealed.wrap_hq).decode(),
                },
                separators=(",", ":"),
            ).encode()
            seq = await outbox.enqueue(self.db, "rec", wire, now)
            await self.db.execute(
                "INSERT INTO applications(id, number, service_code, created, created_by, version, fields, wrap_hq, wrap_node, rnokpp_index, outbox_seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (app_id, number, service_code, now, actor, version, _pack_fields(sealed.fields), sealed.wrap_hq, sealed.wrap_node, index, seq),
            )
        self._notify()
        return SavedApplication(app_id, number)

    async def read_application(self, app_id: str) -> dict[str, str]:
        node_key = self._require_key()
        async with self.db.execute("SELECT number, service_code, version, fields, wrap_hq, wrap_node FROM applications WHERE id = ?", (app_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise KeyError(app_id)
        number, code, version, fields, wrap_hq, wrap_node = row
        rec = crypto.SealedRecord("applications", app_id, version, _unpack_fields(fields), bytes(wrap_hq), None if wrap_node is None else bytes(wrap_node))
        out = crypto.open_with_node_key(rec, node_key)
        out.update(number=number, service_code=code)
        return out

    async def record_position(
        self, gps_time: float, lat: float, lon: float,
        speed: float | None = None, course: float | None = None, trusted_time: bool = False,
    ) -> None:
        """Positions are not personal data: recorded even while the store is locked.

        Raw GPS is the one class that may be thinned: past its byte limit the
        outbox drops every other unsent point instead of refusing the new one.
        """
        item = poscodec.pack_position(poscodec.Position(gps_time, lat, lon, speed, course, trusted_time))
        async with transaction(self.db):
            await outbox.make_room_for_positions(self.db)
            await outbox.enqueue(self.db, "pos", item, self.clock.now())
        self._notify()

    def _notify(self) -> None:
        for cb in self.on_enqueued:
            cb()

    async def outbox_summary(self) -> dict[str, object]:
        states = await outbox.streams(self.db)
        pending = sum(s.pending for s in states.values())
        delivered = sum(s.acked for s in states.values())
        acked_at = [s.acked_at for s in states.values() if s.acked_at]
        return {
            "pending": pending,
            "delivered": delivered,
            "oldest_pending": await outbox.oldest_pending(self.db),
            "last_ack": max(acked_at) if acked_at else None,
            "by_stream": {k: {"pending": v.pending, "delivered": v.acked} for k, v in states.items()},
        }
