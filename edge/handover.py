"""Results handed over at the van (issue 18 item 6).

HQ marks an application "ready" (hq/appstatus.py, the ``recon`` downlink; edge/app_status.py keeps
it).  The administrator hands the result over and records who received it and their document: those
are sealed like a record (fresh data key, wrapped to HQ and under the period key) and, in ONE
transaction, kept in ``handovers``, queued on stream ``rec`` as ``{"type": "handover", ...}`` (HQ then
sets the status "issued", once), audited, and the van's own status row says "issued" at once (its HLC
is kept, so a newer edit from HQ still wins).  A refusal arrives from HQ with its written reason
sealed to this van (``reason_sealed``, opened only while the store is unlocked).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from sync import crypto, outbox
from sync.db import transaction
from sync.migrate import migrate

from . import audit
from .errors import CryptoError, StoreLocked
from .store import Store, _pack_fields, _unpack_fields

TABLE = "handovers"
MIGRATIONS = [
    """
CREATE TABLE handovers (
    id TEXT PRIMARY KEY, application_id TEXT NOT NULL, at REAL NOT NULL, by TEXT NOT NULL, version INTEGER NOT NULL,
    fields BLOB NOT NULL, wrap_hq BLOB NOT NULL, wrap_node BLOB, key_period TEXT, outbox_seq INTEGER NOT NULL
);
CREATE INDEX handovers_app ON handovers(application_id);
""",
]


class HandoverError(ValueError):
    """A handover that cannot be recorded; the message is Ukrainian, for the administrator."""


def refusal_context(node_id: str, application_id: str) -> bytes:
    """What HQ binds a refusal's reason to when it seals it to this van (hq/appstatus.py uses the same)."""
    return f"refusal|{node_id}|{application_id}".encode()


async def create_schema(store: Store) -> None:
    await migrate(store.db, "handovers", MIGRATIONS)
    if TABLE not in store.period_keyed:  # a period key stays while a handover still needs it (Store.forget_spent_keys)
        store.period_keyed.append(TABLE)


async def record(store: Store, application_id: str, receiver: str, document: str, relation: str, actor: str) -> str:
    """Seal and queue the handover; HandoverError if the result is not ready here or the fields are empty."""
    receiver, document, relation = receiver.strip(), document.strip(), relation.strip()
    fields_errors = {k: "обов'язкове поле" for k, v in (("receiver", receiver), ("receiver_document", document)) if not v}
    if fields_errors or len(receiver) > 200 or len(document) > 200 or len(relation) > 200:
        raise HandoverError("Вкажіть, хто отримав результат, і його документ (до 200 символів)")
    store._require_key()
    async with store.db.execute("SELECT status FROM app_status WHERE application_id = ?", (application_id,)) as cur:
        row = await cur.fetchone()
    if row is None or row[0] != "ready":
        raise HandoverError("Видати можна лише результат, який ЦНАП позначив «Готово до видачі»")
    hid = uuid.uuid4().hex
    stamp = store.time.stamp()
    period, period_key = await store.period_key(stamp.t)
    fields = {"receiver": receiver, "receiver_document": document}
    if relation:
        fields["relation"] = relation
    sealed = crypto.seal(TABLE, hid, 1, fields, store.hq_seal_public, period_key)
    wire = json.dumps({
        "type": "handover", "id": hid, "application_id": application_id, "at": stamp.t, "version": 1,
        "fields": json.loads(_pack_fields(sealed.fields)), "wrap_hq": base64.b64encode(sealed.wrap_hq).decode(), "clock": stamp.wire(),
    }, separators=(",", ":")).encode()
    async with transaction(store.db):
        seq = await outbox.enqueue(store.db, "rec", wire, stamp.t)
        await store.db.execute(
            "INSERT INTO handovers(id, application_id, at, by, version, fields, wrap_hq, wrap_node, key_period, outbox_seq)"
            " VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
            (hid, application_id, stamp.t, actor, _pack_fields(sealed.fields), sealed.wrap_hq, sealed.wrap_node, period, seq),
        )
        await store.db.execute("UPDATE app_status SET status = 'issued' WHERE application_id = ?", (application_id,))
        await audit.append(store.db, stamp, actor, "handover", "applications", application_id, "result handed over")
    store._notify()
    return hid


async def of(store: Store, application_id: str, actor: str) -> dict[str, Any] | None:
    """The handover of an application, opened (an audited read); None if none was recorded here."""
    async with store.db.execute(
        "SELECT id, at, by, version, fields, wrap_hq, wrap_node, key_period FROM handovers WHERE application_id = ? ORDER BY at DESC LIMIT 1",
        (application_id,),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    hid, at, by, version, fields, wrap_hq, wrap_node, key_period = row
    out: dict[str, Any] = {"id": hid, "at": at, "by": by}
    if wrap_node is not None and not store.locked:
        rec = crypto.SealedRecord(TABLE, hid, int(version), _unpack_fields(fields), bytes(wrap_hq), bytes(wrap_node))
        out.update(crypto.open_with_node_key(rec, await store.wrapping_key(key_period)))
        async with transaction(store.db):
            await audit.append(store.db, store.time.stamp(), actor, "read", TABLE, hid, "handover")
    return out


async def refusal_reason(store: Store, application_id: str) -> str | None:
    """HQ's written reason for a refusal, opened with this van's sealing key; None if none came or the store is locked."""
    async with store.db.execute("SELECT reason_sealed FROM app_status WHERE application_id = ?", (application_id,)) as cur:
        row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    try:
        key = store.seal_key
    except StoreLocked:
        return None
    try:
        return crypto.unwrap_with_private(bytes(row[0]), key, refusal_context(store.node_id, application_id)).decode("utf-8")
    except CryptoError:
        return None
