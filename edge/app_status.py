"""Application status on the van: set at HQ, received on the signed ``recon`` downlink.

HQ owns the processing status (sync/reconcile.py).  The downlink layer runs
each edit id at most once; here the edit is merged by HLC last-writer-wins,
so an older edit arriving late (or replayed under another id) never
overrides a newer one.  The status is not personal data: it is stored in
clear and works while the store is locked.  Each change is a local audit
entry (which travels to HQ with the audit chain).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from sync import reconcile
from sync.db import fetch_one, transaction
from sync.migrate import migrate

from . import audit
from .store import Store

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
CREATE TABLE app_status (
    application_id TEXT PRIMARY KEY, status TEXT NOT NULL, hlc INTEGER NOT NULL, origin TEXT NOT NULL,
    edit_id TEXT NOT NULL, received REAL NOT NULL
);
""",
    # 2: a refusal's written reason, sealed by HQ to this van (edge/handover.py opens it)
    """
ALTER TABLE app_status ADD COLUMN reason_sealed BLOB;
""",
]


class AppStatuses:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    async def create_schema(self) -> None:
        await migrate(self.db, "app_status", MIGRATIONS)

    async def receive(self, doc: dict[str, Any]) -> None:
        """Downlink handler for ``recon``: merge one HQ edit (idempotent, order-independent)."""
        edit = reconcile.from_wire(doc)
        if edit.field != "status":
            log.info("HQ edit of field %s ignored: this node keeps only the status", edit.field)
            return
        async with transaction(self.db):
            async with self.db.execute("SELECT status, hlc, origin FROM app_status WHERE application_id = ?", (edit.record_id,)) as cur:
                row = await cur.fetchone()
            state = reconcile.RecordState()
            if row is not None:
                state.fields["status"] = reconcile.Version(row[0], int(row[1]), str(row[2]))
            if not reconcile.apply(state, edit):
                log.info("status edit %s for %s not newer than what the van holds: kept", doc.get("id"), edit.record_id)
                return
            stamp = self.store.time.stamp()
            now = stamp.t
            reason = doc.get("reason_sealed")
            try:
                sealed = bytes.fromhex(reason) if isinstance(reason, str) and len(reason) <= 20000 else None
            except ValueError:
                sealed = None
            await self.db.execute(
                "INSERT INTO app_status(application_id, status, hlc, origin, edit_id, received, reason_sealed) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(application_id) DO UPDATE SET status = excluded.status, hlc = excluded.hlc,"
                " origin = excluded.origin, edit_id = excluded.edit_id, received = excluded.received, reason_sealed = excluded.reason_sealed",
                (edit.record_id, str(edit.value), edit.hlc, edit.origin, str(doc.get("id", "")), now, sealed),
            )
            await audit.append(self.db, stamp, "hq", "status", "applications", edit.record_id, f"status {edit.value}")
        self.store._notify()

    async def get(self, application_id: str) -> dict[str, Any] | None:
        row = await fetch_one(self.store.reader, "SELECT status, received FROM app_status WHERE application_id = ?", (application_id,))
        return None if row is None else {"status": str(row[0]), "received": float(row[1])}


APP_STATUS = web.AppKey("app_status", AppStatuses)


async def lookup(app: web.Application, application_id: str) -> dict[str, Any] | None:
    """For pages: the status HQ set, or None (still "accepted" as far as the van knows)."""
    statuses = app.get(APP_STATUS)
    return None if statuses is None else await statuses.get(application_id)
