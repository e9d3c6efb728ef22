"""Home visits assigned by HQ to the case administrators of this node.

HQ seals the person's details (name, address, categories, purpose) to the
node's X25519 key; the node stores the sealed form as received, even while
locked, and opens it only for a logged-in administrator (an audited read).
Start and finish are events to HQ on the ``evt`` stream; no personal data
travels with them.

HQ may cancel or reschedule a visit: it sends the assignment again as a new
downlink item (``id`` ``{visit}-v{n}``, ``visit_id``, ``version`` n, ``status``
assigned or cancelled), each carrying the whole assignment, so whichever
arrives first (a van offline for days gets them all at once) the highest
version wins.  A visit already started or finished is not changed: the item
fails, and HQ sees that in the van's acknowledgement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sync import crypto, outbox
from sync.db import transaction

from . import audit
from .roles import CASE_ADMIN, SUPERVISOR
from .store import Store


class VisitError(ValueError):
    """A visit action that cannot be done; the message is for people."""


def assignment_context(node_id: str, visit_id: str) -> bytes:
    return f"assign|{node_id}|{visit_id}".encode()


@dataclass(frozen=True)
class Visit:
    id: str
    status: str
    planned_date: str | None
    assigned_to: str | None
    details: dict[str, Any]  # opened: name, address, categories, purpose


# The version of each visit's assignment HQ last changed (cancel / reschedule); kept beside ``visits``.
SCHEMA = "CREATE TABLE IF NOT EXISTS visit_versions (visit_id TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"


class HomeVisits:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    @staticmethod
    async def create_schema(db: Any) -> None:
        await db.execute(SCHEMA)
        await db.commit()

    async def receive_assignment(self, doc: dict[str, Any]) -> None:
        """Downlink handler for ``assign``: idempotent (the same id twice changes nothing); a newer version updates."""
        visit_id = str(doc.get("visit_id") or doc["id"])
        version = int(doc.get("version") or 0)
        status = "cancelled" if doc.get("status") == "cancelled" else "assigned"
        sealed = bytes.fromhex(str(doc["sealed"]))
        async with transaction(self.db):
            await self.db.execute(SCHEMA)  # a store opened without the app (tests, tools) has it too
            cur = await self.db.execute(
                "INSERT OR IGNORE INTO visits(id, kind, assigned_to, planned_date, sealed, received, status) VALUES (?, 'home', ?, ?, ?, ?, ?)",
                (visit_id, doc.get("assigned_to"), doc.get("planned_date"), sealed, self.store.clock.now(), status),
            )
            if not cur.rowcount:
                async with self.db.execute(
                    "SELECT v.status, COALESCE(w.version, 0) FROM visits v LEFT JOIN visit_versions w ON w.visit_id = v.id WHERE v.id = ?",
                    (visit_id,),
                ) as c:
                    row = await c.fetchone()
                if row is not None and version > int(row[1]):
                    if row[0] not in ("assigned", "cancelled"):
                        raise VisitError("Візит уже розпочато або завершено: змінити чи скасувати його не можна")
                    await self.db.execute("UPDATE visits SET assigned_to = ?, planned_date = ?, status = ? WHERE id = ?",
                                          (doc.get("assigned_to"), doc.get("planned_date"), status, visit_id))
                elif row is not None:
                    return  # an older version arriving late changes nothing
            await self.db.execute(
                "INSERT INTO visit_versions(visit_id, version) VALUES (?, ?) ON CONFLICT(visit_id) DO UPDATE SET version = excluded.version",
                (visit_id, version))
        self.store._notify()

    @staticmethod
    def _scope(actor: str, role: str | None) -> tuple[str, tuple[str, ...]]:
        """Who sees which visit: a supervisor every one; a case administrator their own and the unassigned; anyone else their own."""
        if role == SUPERVISOR:
            return "1", ()
        if role == CASE_ADMIN:
            return "(assigned_to = ? OR assigned_to IS NULL OR assigned_to = '')", (actor,)
        return "assigned_to = ?", (actor,)

    async def visible(self, visit_id: str, actor: str, role: str | None) -> bool:
        where, args = self._scope(actor, role)
        async with self.db.execute(f"SELECT 1 FROM visits WHERE id = ? AND {where}", (visit_id, *args)) as cur:
            return await cur.fetchone() is not None

    async def list(self, actor: str, role: str | None = None) -> list[Visit]:
        """The visits ``actor`` may see (``_scope``); each opened one is an audited read."""
        key = self.store.seal_key
        where, args = self._scope(actor, role)
        async with self.db.execute(
            f"SELECT id, status, planned_date, assigned_to, sealed FROM visits WHERE {where} ORDER BY planned_date, received", args
        ) as cur:
            rows = await cur.fetchall()
        out = []
        for vid, status, planned, assigned, sealed in rows:
            if not sealed:  # shredded after retention (store.shred_expired)
                out.append(Visit(vid, status, planned, assigned, {"shredded": True}))
                continue
            details = json.loads(crypto.unwrap_with_private(bytes(sealed), key, assignment_context(self.store.node_id, vid)))
            out.append(Visit(vid, status, planned, assigned, details))
        if out:
            async with transaction(self.db):
                for v in out:
                    await audit.append(self.db, self.store.time.stamp(), actor, "read", "visits", v.id, "home visit list")
            self.store._notify()
        return out

    async def _event(self, visit_id: str, status: str, actor: str, expect: str) -> None:
        stamp = self.store.time.stamp()
        now = stamp.t
        column = "started_at" if status == "started" else "finished_at"
        async with transaction(self.db):
            cur = await self.db.execute(f"UPDATE visits SET status = ?, {column} = ? WHERE id = ? AND status = ?", (status, now, visit_id, expect))
            if not cur.rowcount:
                raise VisitError("Цей візит не можна " + ("розпочати" if status == "started" else "завершити") + " зараз")
            item = json.dumps({"type": "visit", "id": visit_id, "event": status, "by": actor, "at": now, "clock": stamp.wire()},
                              separators=(",", ":"))
            await outbox.enqueue(self.db, "evt", item.encode(), now)
            if self.store.trips is not None:  # the stop it happened at; on finish its categories and GPS evidence
                if status == "started":
                    await self.store.trips.link("visits", visit_id, now)
                else:
                    await self.store.trips.visit_finished(visit_id, now)
        self.store._notify()

    async def start(self, visit_id: str, actor: str) -> None:
        await self._event(visit_id, "started", actor, "assigned")

    async def finish(self, visit_id: str, actor: str) -> None:
        await self._event(visit_id, "finished", actor, "started")
