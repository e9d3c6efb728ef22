"""Citizens pre-registered at HQ for a van's day, received as a sealed downlink (``prereg``).

Like home-visit assignments (edge/visits.py): the person's details (name,
phone, what they come for; JSON) are wrapped by HQ to the node's X25519
sealing key with context ``prereg|{node}|{id}``; the day, the time slot and
the service code are not personal data and travel in the clear.  The van
stores an item as received, even while locked, idempotently by id.

On the queue page today's pre-registrations come first; when the citizen
arrives the administrator issues a pre-registered ticket (``П-…``), which
``ServiceDesk.call_next`` calls before walk-ins.  The arrival goes to HQ on
the ``evt`` stream (no personal data).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiosqlite

from sync import crypto, outbox
from sync.db import fetch_all, transaction
from sync.migrate import migrate

from . import audit
from .errors import CryptoError, StoreLocked
from .service_desk import ServiceDesk
from .store import Store

MIGRATIONS = [
    """
    CREATE TABLE preregistrations (
        id TEXT PRIMARY KEY,
        day TEXT NOT NULL,
        slot TEXT,
        service_code TEXT,
        sealed BLOB NOT NULL,
        received REAL NOT NULL,
        ticket_id TEXT,
        arrived_at REAL
    );
    CREATE INDEX preregistrations_day ON preregistrations(day);
    """,
]

DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SLOT_RE = re.compile(r"^\d{2}:\d{2}$")


def prereg_context(node_id: str, prereg_id: str) -> bytes:
    return f"prereg|{node_id}|{prereg_id}".encode()


class PreregError(ValueError):
    """A pre-registration action that cannot be done; the message is for people."""


@dataclass(frozen=True)
class Prereg:
    id: str
    slot: str | None
    service_code: str | None
    ticket_id: str | None
    ticket_label: str | None
    details: dict[str, Any] | None  # None while the store is locked


class Preregistrations:
    def __init__(self, store: Store, desk: ServiceDesk) -> None:
        self.store = store
        self.desk = desk
        self.db = store.db

    @staticmethod
    async def create_schema(db: aiosqlite.Connection) -> None:
        await migrate(db, "prereg", MIGRATIONS)

    def _day(self) -> str:
        return datetime.fromtimestamp(self.store.clock.now(), timezone.utc).strftime("%Y%m%d")

    async def receive(self, doc: dict[str, Any]) -> None:
        """Downlink handler for ``prereg``: idempotent; a malformed item raises (acknowledged ``failed``)."""
        pid = str(doc["id"])
        day = str(doc.get("date", ""))
        slot = doc.get("slot")
        if not DAY_RE.match(day) or (slot is not None and not SLOT_RE.match(str(slot))):
            raise ValueError("pre-registration: date must be YYYY-MM-DD and slot HH:MM")
        sealed = bytes.fromhex(str(doc["sealed"]))
        async with transaction(self.db):
            await self.db.execute(
                "INSERT INTO preregistrations(id, day, slot, service_code, sealed, received) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO NOTHING",
                (pid, day.replace("-", ""), None if slot is None else str(slot), doc.get("service_code"), sealed, self.store.clock.now()),
            )
        self.store._notify()

    async def today(self, actor: str) -> list[Prereg]:
        """Today's pre-registrations by slot; names only when the store is unlocked (each an audited read)."""
        rows = await fetch_all(
            self.store.reader,
            "SELECT p.id, p.slot, p.service_code, p.ticket_id, t.label, p.sealed FROM preregistrations p"
            " LEFT JOIN queue_tickets t ON t.id = p.ticket_id WHERE p.day = ? ORDER BY p.slot IS NULL, p.slot, p.received",
            (self._day(),),
        )
        try:
            key = self.store.seal_key
        except StoreLocked:
            key = None
        out = []
        for pid, slot, code, ticket_id, label, sealed in rows:
            details = None
            if key is not None:
                try:
                    details = json.loads(crypto.unwrap_with_private(bytes(sealed), key, prereg_context(self.store.node_id, pid)))
                except CryptoError:
                    details = None
            out.append(Prereg(pid, slot, code, ticket_id, label, details))
        opened = [p for p in out if p.details is not None]
        if opened:
            async with transaction(self.db):
                for p in opened:
                    await audit.append(self.db, self.store.time.stamp(), actor, "read", "preregistrations", p.id, "queue")
            self.store._notify()
        return out

    async def arrived(self, prereg_id: str, actor: str) -> str:
        """Issue the pre-registered ticket for a citizen who came; the same ticket if pressed twice."""
        async with self.db.execute("SELECT day, ticket_id FROM preregistrations WHERE id = ?", (prereg_id,)) as cur:
            row = await cur.fetchone()
        if row is None or row[0] != self._day():
            raise PreregError("Попереднього запису на сьогодні з таким номером немає")
        if row[1]:
            return str((await self.desk.ticket(str(row[1]))).label)
        ticket = await self.desk.issue_ticket(preregistered=True)
        now = self.store.clock.now()
        async with transaction(self.db):
            await self.db.execute("UPDATE preregistrations SET ticket_id = ?, arrived_at = ? WHERE id = ? AND ticket_id IS NULL",
                                  (ticket.id, now, prereg_id))
            item = {"type": "prereg", "id": prereg_id, "event": "arrived", "ticket": ticket.label, "by": actor, "at": now}
            await outbox.enqueue(self.db, "evt", json.dumps(item, separators=(",", ":")).encode(), now)
        self.store._notify()
        return ticket.label
