"""The node's encrypted record store (aiosqlite, WAL, synchronous=FULL).

One transaction writes a record and its outbox entry; the caller sees the
application number only after COMMIT returned.  Sensitive fields are
sealed (sync.crypto) before they reach SQLite; the node key lives only in
memory, unwrapped from a keyslot when an administrator logs in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from kit.timesource import Stamp, TimeFix, TimeSource
from sync import crypto, outbox, poscodec
from sync.clock import Clock
from sync.db import fetch_all, fetch_one, open_db, open_reader, run_sync, run_transaction, transaction
from sync.errors import OutboxFull
from sync.migrate import migrate

from . import audit
from .errors import CryptoError, StorageFull, StoreLocked

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
    # 2: applicants, audit chain, shredding
    """
    CREATE TABLE applicants (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        created_by TEXT NOT NULL,
        version INTEGER NOT NULL,
        fields BLOB NOT NULL,
        wrap_hq BLOB NOT NULL,
        wrap_node BLOB,
        rnokpp_index BLOB,
        unzr_index BLOB,
        document_index BLOB,
        name_dob_index BLOB,
        outbox_seq INTEGER NOT NULL,
        shredded_at REAL
    );
    CREATE INDEX applicants_rnokpp ON applicants(rnokpp_index);
    CREATE INDEX applicants_unzr ON applicants(unzr_index);
    CREATE INDEX applicants_document ON applicants(document_index);
    CREATE INDEX applicants_name_dob ON applicants(name_dob_index);
    ALTER TABLE applications ADD COLUMN applicant_id TEXT REFERENCES applicants(id);
    ALTER TABLE applications ADD COLUMN shredded_at REAL;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        entity TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        prev BLOB NOT NULL,
        hash BLOB NOT NULL
    );
    """,
    # 3: packages, queue, ratings
    """
    ALTER TABLE applications ADD COLUMN package_code TEXT;
    CREATE TABLE queue_tickets (
        id TEXT PRIMARY KEY,
        day TEXT NOT NULL,
        number INTEGER NOT NULL,
        label TEXT NOT NULL,
        created REAL NOT NULL,
        preregistered INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'called', 'served', 'no_show')),
        called_at REAL,
        finished_at REAL,
        served_by TEXT,
        UNIQUE (day, number)
    );
    CREATE TABLE ratings (
        token TEXT PRIMARY KEY,
        application_id TEXT NOT NULL REFERENCES applications(id),
        created REAL NOT NULL,
        score INTEGER CHECK (score BETWEEN 1 AND 5),
        comment_sealed BLOB,
        rated_at REAL
    );
    """,
    # 4: home visits assigned by HQ (the person's details stay sealed to this node)
    """
    CREATE TABLE visits (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        assigned_to TEXT,
        planned_date TEXT,
        sealed BLOB NOT NULL,
        received REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'assigned' CHECK (status IN ('assigned', 'started', 'finished', 'cancelled')),
        started_at REAL,
        finished_at REAL
    );
    ALTER TABLE applications ADD COLUMN visit_id TEXT;
    """,
    # 5: trusted time (kit/timesource.py): was the creation time trusted, and where on which boot's monotonic clock
    """
    ALTER TABLE applications ADD COLUMN time_trusted INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE applications ADD COLUMN mono REAL;
    ALTER TABLE applications ADD COLUMN boot TEXT;
    ALTER TABLE applicants ADD COLUMN time_trusted INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE applicants ADD COLUMN mono REAL;
    ALTER TABLE applicants ADD COLUMN boot TEXT;
    ALTER TABLE audit ADD COLUMN clock TEXT;
    """,
    # 6: credentials over their whole life (issue 16): slot format and first-login change; per-period keys for shredding
    """
    ALTER TABLE keyslots ADD COLUMN v INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE keyslots ADD COLUMN must_change INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE period_keys (period TEXT PRIMARY KEY, wrapped BLOB NOT NULL) WITHOUT ROWID;
    ALTER TABLE applications ADD COLUMN key_period TEXT;
    ALTER TABLE applicants ADD COLUMN key_period TEXT;
    """,
    # 7: the person's number of the day (sync/figures.py: citizens served), sent to HQ in clear: derived from nothing personal
    """
    ALTER TABLE applications ADD COLUMN citizen TEXT;
    """,
]

# An application number made without trusted time: this marker instead of a date, then the node's own counter.
UNDATED = "U"

# SQLite keeps the WAL at its largest size unless told; after a checkpoint it is cut back to this (bytes).
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024

SENSITIVE_APPLICATION_FIELDS = ("surname", "given_name", "rnokpp")


def application_index(rnokpp: str, extra: dict[str, str]) -> tuple[str, str]:
    """(kind, value) of an application's blind index: the РНОКПП, or without one the УНЗР or the document, keyed
    like an applicant card's indexes (so the same probe finds both)."""
    if rnokpp:
        return "rnokpp", rnokpp
    if extra.get("unzr"):
        return "unzr", extra["unzr"]
    if extra.get("document_number"):
        return "document", f"{extra.get('document_type')}|{extra['document_number']}"
    raise ValueError("an application needs a РНОКПП, an УНЗР or a document to be indexed")


class TripHooks(Protocol):
    """What the trips component (edge/trips/lifecycle.py) adds to records: the stop each was made at, and when it closed."""

    def link_sync(self, conn: sqlite3.Connection, entity: str, entity_id: str, at: float) -> None: ...

    async def link(self, entity: str, entity_id: str, at: float) -> None: ...

    def close_sql(self, table: str) -> str: ...

    async def visit_finished(self, visit_id: str, at: float) -> None: ...


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    must_change: bool = False  # a one-time password: every other action waits until it is changed


@dataclass(frozen=True)
class SavedApplication:
    id: str
    number: str


def _pack_fields(fields: dict[str, bytes]) -> bytes:
    return json.dumps({k: base64.b64encode(v).decode() for k, v in sorted(fields.items())}).encode()


def _unpack_fields(blob: bytes) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in json.loads(blob).items()}


def _append_reads(conn: sqlite3.Connection, group: list[tuple[Stamp, str, str, str, str, asyncio.Future[None]]]) -> None:
    for at, actor, entity, entity_id, reason, _ in group:
        audit.append_sync(conn, at, actor, "read", entity, entity_id, reason)


class Store:
    def __init__(self, db: aiosqlite.Connection, node_id: str, hq_seal_public: X25519PublicKey, clock: Clock,
                 limits: outbox.Limits | None = None) -> None:
        self.db = db
        self.reader = db  # pages' plain reads; a second connection once opened from a file (open)
        self.limits = limits or outbox.DEFAULT_LIMITS
        self.node_id = node_id
        self.hq_seal_public = hq_seal_public
        self.clock = clock
        # "now, and how sure": the app passes a TimeSource as the clock; a bare Clock is wrapped (its own sync flag)
        self.time = clock if isinstance(clock, TimeSource) else TimeSource(clock)
        self._node_key: bytes | None = None
        self._index_key: bytes | None = None
        self._seal_key: X25519PrivateKey | None = None
        self._period_keys: dict[str, bytes] = {}  # opened per-period keys, forgotten on lock
        self.node_seal_wrapped: bytes | None = None  # from the bundle: opens with the node key
        # Tables whose rows wrap their data key under a period key (key_period): a period key goes once none still needs it.
        self.period_keyed: list[str] = ["applications", "applicants"]
        self.on_enqueued: list[Callable[[], None]] = []
        self.trips: TripHooks | None = None  # set by the app once the trips schema exists
        self._read_audits: list[tuple[Stamp, str, str, str, str, asyncio.Future[None]]] = []  # audit_read's group commit
        self._audit_flusher: asyncio.Future[None] | None = None

    @classmethod
    async def open(cls, path: Path, node_id: str, hq_seal_public: X25519PublicKey, clock: Clock,
                   limits: outbox.Limits | None = None) -> Store:
        db = await open_db(path)
        store = cls(db, node_id, hq_seal_public, clock, limits)
        await store._migrate()
        store.reader = await open_reader(path)
        return store

    async def close(self) -> None:
        self.lock()
        if self._audit_flusher is not None:
            await asyncio.wait([self._audit_flusher])  # queued read audits are written before the database closes
        if self.reader is not self.db:
            await self.reader.close()
        await self.db.close()

    async def _migrate(self) -> None:
        await migrate(self.db, "store", MIGRATIONS)
        await outbox.create_schema(self.db)
        await self.db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")

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
                    "INSERT INTO keyslots(kind, username, role, salt, n, wrapped, v, must_change) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (s["kind"], s.get("username"), s.get("role"), s["salt"], s["n"], s["wrapped"], int(str(s.get("v", crypto.SLOT_VERSION))),
                     int(bool(s.get("must_change", False)))),
                )
            if self.node_seal_wrapped is not None:
                # Kept here so that a node key rotation can rewrap it (the bundle's copy is then removed from the card).
                await self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('node_seal_wrapped', ?)", (self.node_seal_wrapped.hex(),))
        return True

    async def adopt_node_seal(self) -> None:
        """A database made before the sealing key was kept here takes the bundle's copy (then the card's can go)."""
        if self.node_seal_wrapped is not None and await self._meta("node_seal_wrapped") is None:
            async with transaction(self.db):
                await self.db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('node_seal_wrapped', ?)", (self.node_seal_wrapped.hex(),))

    async def holds_node_seal(self) -> bool:
        return await self._meta("node_seal_wrapped") is not None

    async def has_admin_slots(self) -> bool:
        async with self.db.execute("SELECT 1 FROM keyslots WHERE kind = 'admin' LIMIT 1") as cur:
            return await cur.fetchone() is not None

    async def _meta(self, key: str) -> str | None:
        async with self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    @property
    def locked(self) -> bool:
        return self._node_key is None

    def lock(self) -> None:
        self._node_key = None
        self._index_key = None
        self._seal_key = None
        self._period_keys.clear()

    @property
    def seal_key(self) -> X25519PrivateKey:
        """The node's private sealing key (downlink sealed by HQ), available while unlocked."""
        self._require_key()
        if self._seal_key is None:
            raise StoreLocked("this node's bundle has no sealing key: re-enrol it to receive sealed assignments")
        return self._seal_key

    async def _open_slot(self, username: str, password: str) -> tuple[Account, bytes] | None:
        """The node key from ``username``'s keyslot, or None for a wrong name or password (same cost either way)."""
        async with self.db.execute(
            "SELECT role, salt, n, wrapped, v, must_change FROM keyslots WHERE kind = 'admin' AND username = ?", (username,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            # Same cost as a real attempt, so a timing probe cannot list usernames.
            await asyncio.get_running_loop().run_in_executor(None, crypto.kek_from_password, password, b"\0" * 16)
            return None
        role, salt, n, wrapped, v, must_change = row
        kek = await asyncio.get_running_loop().run_in_executor(None, crypto.kek_from_password, password, bytes(salt), int(n))
        try:
            node_key = crypto.unwrap_with_key(bytes(wrapped), kek, crypto.admin_slot_context(self.node_id, username, role, int(v)))
        except CryptoError:
            return None
        if int(v) < crypto.SLOT_VERSION or int(n) < crypto.SCRYPT_N:
            # An older slot (weaker scrypt, role not bound): rewrapped now that the password is at hand.
            await self._write_slot(username, str(role), password, node_key, bool(must_change))
            log.info("keyslot upgraded to the current format")
        return Account(username, str(role), bool(must_change)), node_key

    async def unlock(self, username: str, password: str) -> Account | None:
        """Check the password by opening its keyslot; on success the store is unlocked."""
        opened = await self._open_slot(username, password)
        if opened is None:
            return None
        account, node_key = opened
        await self._use_node_key(node_key)
        return account

    async def check_password(self, username: str, password: str) -> bool:
        """Does ``password`` open ``username``'s keyslot?  Leaves the store as it was."""
        return await self._open_slot(username, password) is not None

    async def _use_node_key(self, node_key: bytes) -> None:
        index_wrapped = await self._meta("index_key_wrapped")
        # The blind-index key outlives node key rotations: stored wrapped once the node key was first rotated.
        index_key = (crypto.derive_subkey(node_key, "blind-index") if index_wrapped is None
                     else crypto.unwrap_with_key(bytes.fromhex(index_wrapped), node_key, f"index-key|{self.node_id}".encode()))
        seal_hex = await self._meta("node_seal_wrapped")
        seal_wrapped = bytes.fromhex(seal_hex) if seal_hex is not None else self.node_seal_wrapped
        seal_key = None
        if seal_wrapped is not None:
            raw = crypto.unwrap_with_key(seal_wrapped, node_key, f"node-seal|{self.node_id}".encode())
            seal_key = X25519PrivateKey.from_private_bytes(raw)
        if self._node_key != node_key:
            self._period_keys.clear()
        self._node_key, self._index_key, self._seal_key = node_key, index_key, seal_key

    # -- per-period keys ------------------------------------------------------
    # A record's data key is wrapped under the key of the UTC day it was made (the period), and only that key is
    # wrapped under the node key.  Once every record of a past day is shredded its period key is deleted: then
    # even the node key cannot open a copy of those records that survived anywhere on the card.
    def _period_context(self, period: str) -> bytes:
        return f"period|{self.node_id}|{period}".encode()

    async def period_key(self, now: float) -> tuple[str, bytes]:
        """(period, key) for records made at ``now``; the key is created on the period's first record."""
        period = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%d")
        key = self._period_keys.get(period)
        if key is not None:
            return period, key
        node_key = self._require_key()
        wrapped = await self._period_wrapped(period)
        if wrapped is None:
            async with transaction(self.db):
                await self.db.execute("INSERT OR IGNORE INTO period_keys(period, wrapped) VALUES (?, ?)",
                                      (period, crypto.wrap_with_key(crypto.random_key(), node_key, self._period_context(period))))
            wrapped = await self._period_wrapped(period)
            assert wrapped is not None
        key = self._period_keys[period] = crypto.unwrap_with_key(wrapped, node_key, self._period_context(period))
        return period, key

    async def _period_wrapped(self, period: str) -> bytes | None:
        async with self.db.execute("SELECT wrapped FROM period_keys WHERE period = ?", (period,)) as cur:
            row = await cur.fetchone()
        return None if row is None else bytes(row[0])

    async def wrapping_key(self, key_period: str | None) -> bytes:
        """The key a record's data key is wrapped under: its period's, or the node key for records made before periods."""
        node_key = self._require_key()
        if key_period is None:
            return node_key
        key = self._period_keys.get(key_period)
        if key is None:
            wrapped = await self._period_wrapped(key_period)
            if wrapped is None:
                raise CryptoError("this record's period key was destroyed after its retention")
            key = self._period_keys[key_period] = crypto.unwrap_with_key(wrapped, node_key, self._period_context(key_period))
        return key

    def _require_key(self) -> bytes:
        if self._node_key is None:
            raise StoreLocked("store is locked until an administrator logs in")
        return self._node_key

    # -- intake ------------------------------------------------------------
    async def create_application(
        self, surname: str, given_name: str, rnokpp: str, service_code: str, actor: str, applicant_id: str | None = None
    ) -> SavedApplication:
        return (await self.create_applications(surname, given_name, rnokpp, [service_code], actor, applicant_id))[0]

    async def create_applications(
        self, surname: str, given_name: str, rnokpp: str, service_codes: list[str], actor: str,
        applicant_id: str | None = None, package_code: str | None = None, *, notes: str = "",
        then: Callable[[sqlite3.Connection, list[SavedApplication]], None] | None = None, first_id: str | None = None,
        extra: dict[str, str] | None = None, documents_received: list[str] | None = None,
    ) -> list[SavedApplication]:
        """One application per service, all in ONE transaction (a life-situation package is all or nothing).

        ``notes``, ``extra`` (documents, the reason a РНОКПП is absent, the representative, the business:
        edge/intake.py) and ``documents_received`` are sealed with the identity fields; ``then(conn, saved)`` runs in the same
        transaction after the records (edge/attachments.py adds the photos there, sealed beforehand
        for ``first_id``, the first application's id).
        """
        self._require_key()
        assert self._index_key is not None
        stamp = self.time.stamp()
        now = stamp.t
        period, period_key = await self.period_key(now)
        version = 1
        extra = extra or {}
        index = crypto.blind_index(self._index_key, *application_index(rnokpp, extra))
        identity = {"surname": surname, "given_name": given_name, **extra}
        if rnokpp:
            identity["rnokpp"] = rnokpp
        if notes:
            identity["notes"] = notes
        if documents_received is not None:  # the inventory of documents received at intake, sealed with the record (JSON list)
            identity["documents_received"] = json.dumps(documents_received, ensure_ascii=False)
        prepared = []
        for i, code in enumerate(service_codes):
            app_id = first_id if i == 0 and first_id else uuid.uuid4().hex
            prepared.append((app_id, code, crypto.seal("applications", app_id, version, identity, self.hq_seal_public, period_key)))
        # Without trusted time the number carries no date (a wrong one would look true) and counts on the node's counter.
        day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%d") if stamp.trusted else UNDATED
        # ~ the size of what goes out per application: sealed fields and the HQ wrap, plus metadata
        incoming = sum(len(_pack_fields(p[2].fields)) + len(p[2].wrap_hq) + 300 for p in prepared)
        try:
            saved = await run_transaction(
                self.db, self._insert_applications, incoming, prepared, day, stamp, version, actor, index, applicant_id, package_code, then,
                period,
            )
        except OutboxFull as exc:
            raise StorageFull(exc.message_uk) from exc
        self._notify()
        return saved

    def _insert_applications(
        self, conn: sqlite3.Connection, incoming: int, prepared: list[tuple[str, str, crypto.SealedRecord]], day: str, stamp: Stamp,
        version: int, actor: str, index: bytes, applicant_id: str | None, package_code: str | None,
        then: Callable[[sqlite3.Connection, list[SavedApplication]], None] | None = None, period: str | None = None,
    ) -> list[SavedApplication]:
        """One intake's statements, on the connection's thread in one hop, in one transaction."""
        # Records and audit are never dropped: refuse before the outbox would overflow, atomically with the insert.
        outbox.check_capacities_sync(conn, {"rec": incoming, "audit": 400 * len(prepared)}, self.limits)
        saved = []
        now = stamp.t
        citizen = self._citizen_sync(conn, index, day, now)
        for app_id, service_code, sealed in prepared:
            row = conn.execute(
                "INSERT INTO day_counter(day, n) VALUES (?, 1) ON CONFLICT(day) DO UPDATE SET n = n + 1 RETURNING n", (day,)
            ).fetchone()
            number = f"{self.node_id.upper()}-{day}-{int(row[0]):04d}" if day != UNDATED else f"{self.node_id.upper()}-{UNDATED}-{int(row[0]):05d}"
            wire = json.dumps(
                {
                    "type": "application", "id": app_id, "number": number, "service_code": service_code,
                    "created": now, "version": version, "fields": json.loads(_pack_fields(sealed.fields)),
                    "wrap_hq": base64.b64encode(sealed.wrap_hq).decode(), "package": package_code,
                    "applicant": applicant_id,  # lets HQ find the card's sealed phone and SMS consent
                    "citizen": citizen,
                    "clock": stamp.wire(),  # was "created" trusted; if not, HQ corrects it from this boot's time fix
                },
                separators=(",", ":"),
            ).encode()
            seq = outbox.enqueue_sync(conn, "rec", wire, now)
            conn.execute(
                "INSERT INTO applications(id, number, service_code, created, created_by, version, fields, wrap_hq, wrap_node,"
                " rnokpp_index, outbox_seq, applicant_id, package_code, time_trusted, mono, boot, key_period, citizen)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (app_id, number, service_code, now, actor, version, _pack_fields(sealed.fields), sealed.wrap_hq,
                 sealed.wrap_node, index, seq, applicant_id, package_code, int(stamp.trusted), stamp.mono, stamp.boot, period, citizen),
            )
            audit.append_sync(conn, stamp, actor, "create", "applications", app_id, f"package {package_code}" if package_code else "intake")
            if self.trips is not None:
                self.trips.link_sync(conn, "applications", app_id, now)
            saved.append(SavedApplication(app_id, number))
        if then is not None:
            then(conn, saved)
        return saved

    @staticmethod
    def _citizen_sync(conn: sqlite3.Connection, index: bytes, day: str, now: float) -> str:
        """The person's number of the day: the one their earlier application today has, else the day's next (sync/figures.py)."""
        midnight = now - now % 86400
        row = conn.execute(
            "SELECT citizen FROM applications WHERE rnokpp_index = ? AND created >= ? AND citizen IS NOT NULL LIMIT 1", (index, midnight)
        ).fetchone()
        if row is not None:
            return str(row[0])
        # The day's counter of people beside the day's counter of applications (a key no application day can take).
        n = conn.execute(
            "INSERT INTO day_counter(day, n) VALUES (?, 1) ON CONFLICT(day) DO UPDATE SET n = n + 1 RETURNING n", (f"{day}/citizens",)
        ).fetchone()[0]
        return f"{day}-{int(n)}"

    async def _check_capacity(self, incoming: int) -> None:
        def both(conn: sqlite3.Connection) -> None:
            outbox.check_capacity_sync(conn, "rec", incoming, self.limits)
            outbox.check_capacity_sync(conn, "audit", 400, self.limits)

        try:
            await run_sync(self.db, both)
        except OutboxFull as exc:
            raise StorageFull(exc.message_uk) from exc

    async def read_application(self, app_id: str, actor: str, reason: str = "view") -> dict[str, str]:
        self._require_key()
        row = await fetch_one(
            self.reader,
            "SELECT number, service_code, version, fields, wrap_hq, wrap_node, created, package_code, time_trusted, key_period"
            " FROM applications WHERE id = ?",
            (app_id,),
        )
        if row is None:
            raise KeyError(app_id)
        number, code, version, fields, wrap_hq, wrap_node, created, package_code, time_trusted, key_period = row
        rec = crypto.SealedRecord("applications", app_id, version, _unpack_fields(fields), bytes(wrap_hq), None if wrap_node is None else bytes(wrap_node))
        out = crypto.open_with_node_key(rec, await self.wrapping_key(key_period) if wrap_node is not None else b"")
        # created_trusted "0": the receipt shows no date (a past date must never look true)
        out.update(number=number, service_code=code, created=str(created), package_code=package_code or "",
                   created_trusted="1" if time_trusted == 1 else "0")
        # Shown only once its audit entry is durable; receipts viewed together share one COMMIT.
        await self.audit_read(actor, "applications", app_id, reason)
        return out

    async def audit_read(self, actor: str, entity: str, entity_id: str, reason: str) -> None:
        """Record an audited read durably (COMMIT with fsync) before the caller shows anything.

        Reads arriving while a COMMIT is on the disk queue up and are written by
        the next transaction together (group commit): with ten tablets showing
        receipts, one fsync serves several pages instead of each waiting for all
        the fsyncs ahead of it.  Entries keep their order in the chain.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._read_audits.append((self.time.stamp(), actor, entity, entity_id, reason, fut))
        if self._audit_flusher is None or self._audit_flusher.done():
            self._audit_flusher = asyncio.ensure_future(self._flush_read_audits())
        await fut

    async def _flush_read_audits(self) -> None:
        while self._read_audits:
            group, self._read_audits = self._read_audits, []
            try:
                await run_transaction(self.db, _append_reads, group)
            except Exception as exc:  # noqa: BLE001 - passed on to every waiter (OutboxFull, a closed database): none is shown the data
                for *_, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            except BaseException:
                for *_, fut in group:
                    fut.cancel()
                raise
            for *_, fut in group:
                if not fut.done():
                    fut.set_result(None)
            self._notify()

    # -- applicants -----------------------------------------------------------
    def _indexes(self, fields: dict[str, str]) -> dict[str, bytes | None]:
        assert self._index_key is not None
        key = self._index_key

        def bi(kind: str, value: str | None) -> bytes | None:
            return None if not value else crypto.blind_index(key, kind, value)

        name_dob = None
        if fields.get("birth_date"):
            name_dob = f"{fields['surname'].casefold()}|{fields['birth_date']}"
        doc = f"{fields.get('document_type')}|{fields['document_number']}" if fields.get("document_number") else None
        return {
            "rnokpp_index": bi("rnokpp", fields.get("rnokpp")),
            "unzr_index": bi("unzr", fields.get("unzr")),
            "document_index": bi("document", doc),
            "name_dob_index": bi("name_dob", name_dob),
        }

    async def create_applicant(self, fields: dict[str, str], actor: str) -> str:
        """Seal and store a validated applicant (see intake.parse_applicant); returns its id."""
        self._require_key()
        applicant_id = uuid.uuid4().hex
        stamp = self.time.stamp()
        now = stamp.t
        period, period_key = await self.period_key(now)
        sealed = crypto.seal("applicants", applicant_id, 1, fields, self.hq_seal_public, period_key)
        idx = self._indexes(fields)
        wire = json.dumps(
            {"type": "applicant", "id": applicant_id, "created": now, "version": 1,
             "fields": json.loads(_pack_fields(sealed.fields)), "wrap_hq": base64.b64encode(sealed.wrap_hq).decode(),
             "clock": stamp.wire()},
            separators=(",", ":"),
        ).encode()
        await self._check_capacity(len(wire))
        async with transaction(self.db):
            seq = await outbox.enqueue(self.db, "rec", wire, now)
            await self.db.execute(
                "INSERT INTO applicants(id, created, created_by, version, fields, wrap_hq, wrap_node, rnokpp_index, unzr_index,"
                " document_index, name_dob_index, outbox_seq, time_trusted, mono, boot, key_period)"
                " VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (applicant_id, now, actor, _pack_fields(sealed.fields), sealed.wrap_hq, sealed.wrap_node,
                 idx["rnokpp_index"], idx["unzr_index"], idx["document_index"], idx["name_dob_index"], seq,
                 int(stamp.trusted), stamp.mono, stamp.boot, period),
            )
            await audit.append(self.db, stamp, actor, "create", "applicants", applicant_id, "intake")
            if self.trips is not None:
                await self.trips.link("applicants", applicant_id, now)
        self._notify()
        return applicant_id

    async def find_applicants(self, actor: str, *, rnokpp: str | None = None, unzr: str | None = None,
                              document: tuple[str, str] | None = None, surname: str | None = None,
                              birth_date: str | None = None) -> list[dict[str, str]]:
        """Look up by blind index: no plaintext is compared or stored.  Each hit is an audited read."""
        self._require_key()
        assert self._index_key is not None
        if rnokpp:
            column, probe = "rnokpp_index", crypto.blind_index(self._index_key, "rnokpp", rnokpp)
        elif unzr:
            column, probe = "unzr_index", crypto.blind_index(self._index_key, "unzr", unzr)
        elif document:
            column, probe = "document_index", crypto.blind_index(self._index_key, "document", f"{document[0]}|{document[1]}")
        elif surname and birth_date:
            column, probe = "name_dob_index", crypto.blind_index(self._index_key, "name_dob", f"{surname.casefold()}|{birth_date}")
        else:
            return []
        async with self.db.execute(
            f"SELECT id, version, fields, wrap_hq, wrap_node, key_period FROM applicants WHERE {column} = ? AND wrap_node IS NOT NULL", (probe,)
        ) as cur:
            rows = await cur.fetchall()
        found = []
        for app_id, version, fields, wrap_hq, wrap_node, key_period in rows:
            rec = crypto.SealedRecord("applicants", app_id, version, _unpack_fields(fields), bytes(wrap_hq), bytes(wrap_node))
            found.append({"id": app_id, **crypto.open_with_node_key(rec, await self.wrapping_key(key_period))})
        if found:
            async with transaction(self.db):
                for f in found:
                    await audit.append(self.db, self.time.stamp(), actor, "read", "applicants", f["id"], f"search by {column.removesuffix('_index')}")
            self._notify()
        return found

    async def package_siblings(self, app_id: str) -> list[tuple[str, str]]:
        """(number, service code) of every application submitted together with this one as a package."""
        rows = await fetch_all(
            self.reader,
            "SELECT b.number, b.service_code FROM applications a JOIN applications b"
            " ON b.package_code = a.package_code AND b.created = a.created AND b.created_by = a.created_by"
            " WHERE a.id = ? AND a.package_code IS NOT NULL ORDER BY b.number",
            (app_id,),
        )
        return [(r[0], r[1]) for r in rows]

    async def read_applicant(self, applicant_id: str, actor: str, reason: str) -> dict[str, str]:
        """Open one applicant's card (an audited read); KeyError if unknown, CryptoError if shredded."""
        self._require_key()
        async with self.db.execute("SELECT version, fields, wrap_hq, wrap_node, key_period FROM applicants WHERE id = ?", (applicant_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise KeyError(applicant_id)
        version, fields, wrap_hq, wrap_node, key_period = row
        rec = crypto.SealedRecord("applicants", applicant_id, version, _unpack_fields(fields), bytes(wrap_hq),
                                  None if wrap_node is None else bytes(wrap_node))
        out = {"id": applicant_id, **crypto.open_with_node_key(rec, await self.wrapping_key(key_period) if wrap_node is not None else b"")}
        async with transaction(self.db):
            await audit.append(self.db, self.time.stamp(), actor, "read", "applicants", applicant_id, reason)
        self._notify()
        return out

    async def applicant_exists(self, applicant_id: str) -> bool:
        async with self.db.execute("SELECT 1 FROM applicants WHERE id = ?", (applicant_id,)) as cur:
            return await cur.fetchone() is not None

    # -- administrators' keyslots -------------------------------------------------
    async def accounts(self) -> list[Account]:
        async with self.db.execute("SELECT username, role, must_change FROM keyslots WHERE kind = 'admin' ORDER BY username") as cur:
            return [Account(r[0], r[1], bool(r[2])) async for r in cur]

    async def _slot_row(self, username: str, role: str, password: str, node_key: bytes) -> tuple[bytes, int, bytes, int]:
        """(salt, n, wrapped, v) of a new slot wrapping ``node_key`` under ``password``, bound to the username and role."""
        salt = os.urandom(16)
        n = crypto.SCRYPT_N
        kek = await asyncio.get_running_loop().run_in_executor(None, crypto.kek_from_password, password, salt, n)
        return salt, n, crypto.wrap_with_key(node_key, kek, crypto.admin_slot_context(self.node_id, username, role)), crypto.SLOT_VERSION

    async def _write_slot(self, username: str, role: str, password: str, node_key: bytes, must_change: bool) -> None:
        salt, n, wrapped, v = await self._slot_row(username, role, password, node_key)
        async with transaction(self.db):
            await self.db.execute("UPDATE keyslots SET salt = ?, n = ?, wrapped = ?, v = ?, must_change = ? WHERE kind = 'admin' AND username = ?",
                                  (salt, n, wrapped, v, int(must_change), username))

    async def add_admin(self, username: str, password: str, role: str, actor: str, must_change: bool = False) -> None:
        """Needs the store unlocked: the new slot wraps the node key under the new password."""
        salt, n, wrapped, v = await self._slot_row(username, role, password, self._require_key())
        async with transaction(self.db):
            await self.db.execute(
                "INSERT INTO keyslots(kind, username, role, salt, n, wrapped, v, must_change) VALUES ('admin', ?, ?, ?, ?, ?, ?, ?)",
                (username, role, salt, n, wrapped, v, int(must_change)),
            )
            await audit.append(self.db, self.time.stamp(), actor, "create", "keyslots", username, "administrator added")
        self._notify()

    async def remove_admin(self, username: str, actor: str) -> bool:
        async with transaction(self.db):
            async with self.db.execute("SELECT COUNT(*) FROM keyslots WHERE kind = 'admin'") as cur:
                row = await cur.fetchone()
            if row is None or row[0] <= 1:
                raise ValueError("the last administrator cannot be removed")
            cur2 = await self.db.execute("DELETE FROM keyslots WHERE kind = 'admin' AND username = ?", (username,))
            if not cur2.rowcount:
                return False
            await audit.append(self.db, self.time.stamp(), actor, "delete", "keyslots", username, "administrator removed")
        await self.checkpoint()  # the deleted slot must not stay readable in the WAL
        self._notify()
        return True

    async def change_password(self, username: str, new_password: str, *, actor: str | None = None, must_change: bool = False) -> None:
        """Rewrap the node key under the new password; the old password stops working (also in the WAL: checkpointed)."""
        async with self.db.execute("SELECT role FROM keyslots WHERE kind = 'admin' AND username = ?", (username,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise KeyError(username)
        salt, n, wrapped, v = await self._slot_row(username, str(row[0]), new_password, self._require_key())
        reason = "one-time password set" if must_change else "password changed"
        async with transaction(self.db):
            await self.db.execute("UPDATE keyslots SET salt = ?, n = ?, wrapped = ?, v = ?, must_change = ? WHERE kind = 'admin' AND username = ?",
                                  (salt, n, wrapped, v, int(must_change), username))
            await audit.append(self.db, self.time.stamp(), actor or username, "update", "keyslots", username, reason)
        await self.checkpoint()
        self._notify()

    async def rotate_node_key(self, actor: str, actor_password: str, one_time: Callable[[], str]) -> dict[str, str]:
        """A new node key: everything wrapped under the old one is rewrapped (cheap: the period keys, the few
        records older than periods, the sealing and index keys, HQ's recovery slot).  The actor's slot is rewrapped
        under their password; every other administrator gets a new one-time password (returned, shown once)."""
        old = self._require_key()
        async with self.db.execute("SELECT username, role FROM keyslots WHERE kind = 'admin' ORDER BY username") as cur:
            admins = [(str(r[0]), str(r[1])) async for r in cur]
        if actor not in dict(admins):
            raise KeyError(actor)
        new = crypto.random_key()
        passwords = {u: (actor_password if u == actor else one_time()) for u, _ in admins}
        slots = {u: await self._slot_row(u, role, passwords[u], new) for u, role in admins}
        assert self._index_key is not None
        index_key = self._index_key
        seal_hex = await self._meta("node_seal_wrapped")
        seal_wrapped = bytes.fromhex(seal_hex) if seal_hex is not None else self.node_seal_wrapped
        seal_ctx = f"node-seal|{self.node_id}".encode()
        now = self.clock.now()
        async with transaction(self.db):
            async with self.db.execute("SELECT period, wrapped FROM period_keys") as cur:
                periods = [(str(r[0]), bytes(r[1])) for r in await cur.fetchall()]
            for period, wrapped in periods:
                ctx = self._period_context(period)
                await self.db.execute("UPDATE period_keys SET wrapped = ? WHERE period = ?",
                                      (crypto.wrap_with_key(crypto.unwrap_with_key(wrapped, old, ctx), new, ctx), period))
            for table in self.period_keyed:  # records sealed before period keys existed wrap under the node key itself
                async with self.db.execute(f"SELECT id, version, wrap_node FROM {table} WHERE wrap_node IS NOT NULL AND key_period IS NULL") as cur:
                    legacy = [(str(r[0]), int(r[1]), bytes(r[2])) for r in await cur.fetchall()]
                for rid, version, wrapped in legacy:
                    ctx = crypto.record_aad(table, rid, version)
                    await self.db.execute(f"UPDATE {table} SET wrap_node = ? WHERE id = ?",
                                          (crypto.wrap_with_key(crypto.unwrap_with_key(wrapped, old, ctx), new, ctx), rid))
            await self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('index_key_wrapped', ?)",
                                  (crypto.wrap_with_key(index_key, new, f"index-key|{self.node_id}".encode()).hex(),))
            if seal_wrapped is not None:
                raw = crypto.unwrap_with_key(seal_wrapped, old, seal_ctx)
                await self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('node_seal_wrapped', ?)",
                                      (crypto.wrap_with_key(raw, new, seal_ctx).hex(),))
            await self.db.execute("UPDATE keyslots SET wrapped = ? WHERE kind = 'hq'",
                                  (crypto.wrap_to_public(new, self.hq_seal_public, f"keyslot|{self.node_id}|hq|".encode()),))
            for u, (salt, n, wrapped, v) in slots.items():
                await self.db.execute("UPDATE keyslots SET salt = ?, n = ?, wrapped = ?, v = ?, must_change = ? WHERE kind = 'admin' AND username = ?",
                                      (salt, n, wrapped, v, int(u != actor), u))
            await audit.append(self.db, now, actor, "update", "keyslots", "node-key", "node key rotated")
        await self.checkpoint()
        await self._use_node_key(new)
        self._notify()
        return {u: p for u, p in passwords.items() if u != actor}

    # -- crypto-shredding ---------------------------------------------------------
    async def shred_expired(self, retention_s: float) -> int:
        """Forget the node's copy of personal data HQ holds and local retention no longer needs.

        Deleting the node's wrap of the data key makes the ciphertext unreadable
        here (HQ's wrap travelled with the record); the blind indexes go too.
        Non-personal metadata (service code, times) stays for local statistics.
        Retention counts from the close of the visit the record was made at
        (the stop's departure, the trip's return: ``TripHooks.close_sql``),
        from creation when no trips component is attached; a finished home
        visit's sealed details go ``retention_s`` after its finish.  With
        ``retention_s`` 0 (HQ's shred command) everything HQ holds goes now.
        Runs while locked: it needs no key.  Retention counts in trusted time:
        without it nothing is shredded (it waits), and a record whose own time
        was untrusted waits until a time fix corrects it (``apply_time_fix``).
        """
        trusted_now = self.time.trusted_now()
        if trusted_now is None and retention_s > 0:
            return 0
        now = self.clock.now() if trusted_now is None else trusted_now
        cutoff = now - retention_s
        async with self.db.execute("SELECT acked FROM outbox_stream WHERE stream = 'rec'") as cur:
            row = await cur.fetchone()
        acked = int(row[0]) if row else 0
        shredded = 0
        async with transaction(self.db):
            for table, extra in (("applications", "rnokpp_index = zeroblob(16)"),
                                 ("applicants", "rnokpp_index = NULL, unzr_index = NULL, document_index = NULL, name_dob_index = NULL")):
                # Retention 0 (HQ's shred command: a lost van) forgets everything HQ holds, open visits included.
                closed = self.trips.close_sql(table) if self.trips is not None and retention_s > 0 else "created"
                async with self.db.execute(
                    f"SELECT id FROM {table} WHERE wrap_node IS NOT NULL AND outbox_seq <= ? AND {closed} <= ?"
                    f" AND (time_trusted > 0 OR ? <= 0)", (acked, cutoff, retention_s)
                ) as cur:
                    ids = [r[0] for r in await cur.fetchall()]
                for rid in ids:
                    await self.db.execute(f"UPDATE {table} SET wrap_node = NULL, fields = '{{}}', shredded_at = ?, {extra} WHERE id = ?", (now, rid))
                    await audit.append(self.db, now, "system", "shred", table, rid, f"retention {retention_s / 86400:g} days passed, HQ holds it")
                shredded += len(ids)
            # A result handed over at the van (edge/handover.py): who received it goes like the application, once HQ holds it.
            if await self._has_table("handovers"):
                async with self.db.execute(
                    "SELECT id FROM handovers WHERE wrap_node IS NOT NULL AND outbox_seq <= ? AND (at <= ? OR ? <= 0)", (acked, cutoff, retention_s)
                ) as cur:
                    hids = [r[0] for r in await cur.fetchall()]
                for hid in hids:
                    await self.db.execute("UPDATE handovers SET wrap_node = NULL, fields = '{}' WHERE id = ?", (hid,))
                    await audit.append(self.db, now, "system", "shred", "handovers", hid, f"retention {retention_s / 86400:g} days passed, HQ holds it")
                shredded += len(hids)
            # HQ wrote the home visit's details, so it holds them; the van needs them no longer than retention after the finish.
            async with self.db.execute(
                "SELECT id FROM visits WHERE (status = 'finished' AND finished_at <= ? OR ? <= 0) AND length(sealed) > 0", (cutoff, retention_s)
            ) as cur:
                vids = [r[0] for r in await cur.fetchall()]
            for vid in vids:
                await self.db.execute("UPDATE visits SET sealed = x'' WHERE id = ?", (vid,))
                await audit.append(self.db, now, "system", "shred", "visits", vid, f"retention {retention_s / 86400:g} days after the visit")
            shredded += len(vids)
            # What the visit left besides its details: where the van stood (the person's home) and the day's
            # health-category counts (one visit a day makes a count a diagnosis).  HQ has both from the evt stream.
            if await self._has_table("visit_evidence"):
                await self.db.executemany("DELETE FROM visit_evidence WHERE visit_id = ?", [(v,) for v in vids])
                if retention_s <= 0:
                    await self.db.execute("DELETE FROM visit_evidence")
            if await self._has_table("visit_category_counts"):
                await self.db.execute("DELETE FROM visit_category_counts WHERE day < ? OR ? <= 0",
                                      (datetime.fromtimestamp(cutoff, timezone.utc).date().isoformat(), retention_s))
        await self.forget_spent_keys(everything=retention_s <= 0, checkpoint=shredded > 0)
        if shredded:
            self._notify()
        return shredded

    async def apply_time_fix(self, fix: TimeFix) -> int:
        """Trusted time arrived: correct this boot's untrusted records here, and tell HQ (``evt`` ``time_fix``) once.

        A record of this boot gets ``fix.time - (fix.mono - its mono)``.  One of an
        earlier boot has no common clock with the fix; it gets the fix's time, which
        is later than its true time, so retention counts from later: never early.
        The application's number stays as it was issued.
        """
        mono_offset = fix.time - fix.mono
        n = 0
        async with transaction(self.db):
            for table in ("applications", "applicants"):
                cur = await self.db.execute(
                    # time_trusted 2: an upper bound (another boot), good for retention, never shown as the date
                    f"UPDATE {table} SET created = CASE WHEN boot = ? AND mono IS NOT NULL THEN mono + ? ELSE ? END,"
                    " time_trusted = CASE WHEN boot = ? AND mono IS NOT NULL THEN 1 ELSE 2 END"
                    " WHERE time_trusted = 0", (fix.boot, mono_offset, fix.time, fix.boot),
                )
                n += cur.rowcount
            await outbox.enqueue(self.db, "evt", json.dumps(fix.wire(), separators=(",", ":")).encode(), fix.time)
        self._notify()
        return n

    async def _has_table(self, name: str) -> bool:
        async with self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)) as cur:
            return await cur.fetchone() is not None

    async def shred_track(self, retention_s: float) -> int:
        """The van's own GPS track (edge/trips/recorder.py) past its retention: it leads to people's doors."""
        if not await self._has_table("track_points"):
            return 0
        trusted_now = self.time.trusted_now()
        if trusted_now is None and retention_s > 0:
            return 0  # retention counts in trusted time: without it, wait (see shred_expired)
        now = self.clock.now() if trusted_now is None else trusted_now
        async with transaction(self.db):
            cur = await self.db.execute("DELETE FROM track_points WHERE t < ? OR ? <= 0", (now - retention_s, retention_s))
            n = cur.rowcount
        if n:
            await self.checkpoint()
        return int(n)

    async def forget_spent_keys(self, everything: bool = False, checkpoint: bool = False) -> int:
        """Delete the period keys no unshredded record needs any more; then (if any went, or ``checkpoint``) cut the WAL.

        Only past periods go (today's key may be in use by an intake in flight), except with ``everything``
        (HQ's shred command: a lost van), which takes today's too.
        """
        today = datetime.fromtimestamp(self.clock.now(), timezone.utc).strftime("%Y%m%d")
        live = " ".join(f"AND NOT EXISTS (SELECT 1 FROM {t} WHERE {t}.key_period = period_keys.period AND {t}.wrap_node IS NOT NULL)"
                        for t in self.period_keyed)
        async with transaction(self.db):
            async with self.db.execute(f"SELECT period FROM period_keys WHERE (period < ? OR ?) {live}", (today, int(everything))) as cur:
                spent = [str(r[0]) for r in await cur.fetchall()]
            await self.db.executemany("DELETE FROM period_keys WHERE period = ?", [(p,) for p in spent])
            for p in spent:
                await audit.append(self.db, self.time.stamp(), "system", "shred", "period_keys", p, "every record of the period shredded")
        for p in spent:
            self._period_keys.pop(p, None)
        if spent or checkpoint:
            await self.checkpoint()
        return len(spent)

    async def checkpoint(self) -> bool:
        """Fold the WAL into the database and truncate it: old page images (wraps, shredded rows, old keyslots) leave the WAL.

        secure_delete (sync/db.py) zeroes them inside the database file.  A reader on another connection
        (the uplink's) can hold the WAL for a moment: tried a few times; True once it was truncated.
        """
        for _ in range(5):
            try:
                async with self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
                    row = await cur.fetchone()
            except sqlite3.OperationalError:  # a statement of another task on this connection is still open
                row = None
            if row is not None and int(row[0]) == 0:
                return True
            await asyncio.sleep(0.05)
        log.warning("WAL checkpoint could not truncate (a reader held it); retried at the next shredding round")
        return False

    async def record_position(
        self, gps_time: float, lat: float, lon: float,
        speed: float | None = None, course: float | None = None, trusted_time: bool = False, stamp: Stamp | None = None,
    ) -> None:
        """Positions are not personal data: recorded even while the store is locked.

        Raw GPS is the one class that may be thinned: past its byte limit the
        outbox drops every other unsent point instead of refusing the new one.
        """
        # an untrusted time travels with where it was on which boot's monotonic clock, for HQ to correct
        mono, boot = (stamp.mono, poscodec.boot32(stamp.boot)) if stamp is not None and not trusted_time else (None, None)
        item = poscodec.pack_position(poscodec.Position(gps_time, lat, lon, speed, course, trusted_time, mono, boot))
        async with transaction(self.db):
            await outbox.make_room_for_positions(self.db, self.limits)
            await outbox.enqueue(self.db, "pos", item, self.clock.now())
        self._notify()

    def _notify(self) -> None:
        for cb in self.on_enqueued:
            cb()

    async def outbox_summary(self, snap: outbox.Snapshot | None = None) -> dict[str, object]:
        snap = snap or await outbox.snapshot(self.db)
        states = snap.states
        pending = sum(s.pending for s in states.values())
        delivered = sum(s.acked for s in states.values())
        acked_at = [s.acked_at for s in states.values() if s.acked_at]
        return {
            "pending": pending,
            "delivered": delivered,
            "oldest_pending": snap.oldest_pending,
            "last_ack": max(acked_at) if acked_at else None,
            "by_stream": {k: {"pending": v.pending, "delivered": v.acked} for k, v in states.items()},
        }
