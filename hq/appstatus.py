"""Application status set at HQ, and the downlink acknowledgements HQ hears back.

A records officer (or admin) sets an application's status in the vault.
In ONE transaction HQ writes the current status, the audited edit (who,
when, from, to) and, when the application becomes "ready", the SMS notice
intention (hq/sms.py).  The edit then goes to the van as a signed ``recon``
downlink carrying its HLC (sync/reconcile.py); until the van's ``down_ack``
comes back on the ``evt`` stream it is sent again, and the van applies each
edit once and newer-wins, so resends and late copies are harmless.

The same ack projection gives the commands console its state: each signed
command is logged when sent and marked with the van's answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from sync import reconcile, safejson
from .db import migrate, transaction
from .resend import resend_rounds

from . import sms
from .appkeys import DOWNLINK, STORE
from .errors import HQError
from .sender import NotConnected
from .store import HQStore
from .events import fold_events

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
CREATE TABLE app_status (
    record_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, status TEXT NOT NULL, hlc BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL, updated_by TEXT NOT NULL
);
CREATE TABLE status_edits (
    edit_id TEXT PRIMARY KEY, record_id TEXT NOT NULL, node_id TEXT NOT NULL, old_status TEXT NOT NULL, status TEXT NOT NULL,
    hlc BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL, username TEXT NOT NULL,
    sent_at DOUBLE PRECISION, sends BIGINT NOT NULL DEFAULT 0, acked_at DOUBLE PRECISION, result TEXT
);
CREATE INDEX status_edits_record ON status_edits(record_id);
CREATE TABLE command_log (
    cmd_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, kind TEXT NOT NULL, username TEXT NOT NULL, sent_at DOUBLE PRECISION NOT NULL,
    acked_at DOUBLE PRECISION, result TEXT
);
CREATE TABLE ack_cursor (node_id TEXT PRIMARY KEY, seq BIGINT NOT NULL);
""",
    # 2: results handed over at the van (their sealed record stays in items), and a refusal's written reason,
    # sealed to the van (sent with the edit) and to HQ (shown on the record page): never in clear on disk
    """
CREATE TABLE handovers (
    handover_id TEXT PRIMARY KEY, record_id TEXT NOT NULL, node_id TEXT NOT NULL, seq BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL,
    applied_at DOUBLE PRECISION, result TEXT
);
CREATE TABLE handover_cursor (node_id TEXT PRIMARY KEY, seq BIGINT NOT NULL);
ALTER TABLE status_edits ADD COLUMN reason_van TEXT;
ALTER TABLE status_edits ADD COLUMN reason_hq TEXT;
""",
]

STATUSES = reconcile.STATUSES
LABELS = {"accepted": "Прийнято", "in_progress": "В роботі", "ready": "Готово до видачі", "issued": "Видано", "refused": "Відмовлено"}
# What may follow what.  "accepted" is implicit: the van accepted the application at intake.
# "ready" may go back to "in_progress" (a document to redo); "issued" and "refused" are final.
TRANSITIONS = {
    "accepted": ("in_progress", "ready", "refused"),
    "in_progress": ("ready", "refused"),
    "ready": ("issued", "in_progress"),
    "issued": (),
    "refused": (),
}
RESEND_AFTER = 60.0  # seconds without the van's ack before an edit is sent again


class StatusError(HQError):
    """A status change that cannot be made; the message is for people."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


async def create_schema(store: HQStore) -> None:
    await migrate(store.db, "hq_app_status", MIGRATIONS)
    await sms.create_schema(store)


async def current(store: HQStore, record_id: str) -> str:
    async with store.db.execute("SELECT status FROM app_status WHERE record_id = ?", (record_id,)) as cur:
        row = await cur.fetchone()
    return "accepted" if row is None else str(row[0])


async def statuses(store: HQStore, record_ids: list[str]) -> dict[str, str]:
    out = {r: "accepted" for r in record_ids}
    for i in range(0, len(record_ids), 500):  # one query per page of the list, not a scan of every status
        chunk = record_ids[i:i + 500]
        async with store.db.execute(
            f"SELECT record_id, status FROM app_status WHERE record_id IN ({', '.join('?' * len(chunk))})", tuple(chunk)
        ) as cur:
            async for rid, status in cur:
                out[str(rid)] = str(status)
    return out


# (node_id, record_id) -> (reason sealed to that van or None, reason sealed to HQ), both hex
ReasonSealer = Callable[[str, str], tuple[str | None, str]]


async def set_status(store: HQStore, record_id: str, status: str, username: str, hlc: int, notify_sms: bool,
                     seal_reason: ReasonSealer | None = None) -> dict[str, Any]:
    """Change the status; the edit (and an SMS notice for "ready") commit together.  Returns the edit.

    ``seal_reason``: a refusal's written reason, sealed once the van is known, stored with the edit."""
    if status not in STATUSES:
        raise StatusError("Невідомий стан заяви", "unknown_status")
    now = store.clock.now()
    edit_id = uuid.uuid4().hex
    async with transaction(store.db):
        async with store.db.execute("SELECT node_id FROM records WHERE record_id = ?", (record_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise StatusError("Заяву не знайдено", "not_found")
        node_id = str(row[0])
        async with store.db.execute("SELECT status FROM app_status WHERE record_id = ?", (record_id,)) as cur:
            prev = await cur.fetchone()
        old = "accepted" if prev is None else str(prev[0])
        if status not in TRANSITIONS[old]:
            raise StatusError(f"Стан «{LABELS[old]}» не можна змінити на «{LABELS[status]}»", "bad_transition")
        await store.db.execute(
            "INSERT INTO app_status(record_id, node_id, status, hlc, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (record_id) DO UPDATE SET status = excluded.status, hlc = excluded.hlc,"
            " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            (record_id, node_id, status, hlc, now, username),
        )
        reason_van, reason_hq = seal_reason(node_id, record_id) if seal_reason is not None else (None, None)
        await store.db.execute(
            "INSERT INTO status_edits(edit_id, record_id, node_id, old_status, status, hlc, at, username, reason_van, reason_hq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (edit_id, record_id, node_id, old, status, hlc, now, username, reason_van, reason_hq),
        )
        if status == "ready" and notify_sms:
            await sms.enqueue(store, record_id, now)
    return {"edit_id": edit_id, "record_id": record_id, "node_id": node_id, "old": old, "status": status, "hlc": hlc}


async def history(store: HQStore, record_id: str) -> list[dict[str, Any]]:
    async with store.db.execute(
        "SELECT edit_id, old_status, status, at, username, sent_at, acked_at, result, reason_hq FROM status_edits WHERE record_id = ?"
        " ORDER BY at, hlc",
        (record_id,),
    ) as cur:
        return [{"edit_id": r[0], "old": r[1], "status": r[2], "at": r[3], "username": r[4], "sent_at": r[5], "acked_at": r[6],
                 "result": r[7], "reason_sealed": r[8]} async for r in cur]


async def send_edit(app: web.Application, edit_id: str) -> bool:
    """Publish one edit to its van (signed); False if HQ has no broker connection now."""
    store = app[STORE]
    async with store.db.execute("SELECT record_id, node_id, status, hlc, reason_van FROM status_edits WHERE edit_id = ?", (edit_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        return False
    record_id, node_id, status, hlc = str(row[0]), str(row[1]), str(row[2]), int(row[3])
    doc = reconcile.to_wire(reconcile.Edit(record_id, "status", status, hlc, reconcile.HQ), edit_id)
    if row[4]:
        doc["reason_sealed"] = str(row[4])  # a refusal's reason, sealed to this van (edge/handover.py opens it)
    try:
        await app[DOWNLINK].send(node_id, "recon", [doc], "статус не надіслано")
    except NotConnected:
        return False  # the status loop sends it when the broker is back
    async with transaction(store.db):
        await store.db.execute("UPDATE status_edits SET sent_at = ?, sends = sends + 1 WHERE edit_id = ?", (store.clock.now(), edit_id))
    return True


async def project_handovers(app: web.Application) -> int:
    """Read the vans' handovers (``rec`` items of type "handover") and set the status "issued" once each.  Returns how many applied.

    The handover row is written with the cursor's advance; the status is set after, in its own
    transaction, and the row marked applied; a crash between them is retried from the unapplied rows.
    """
    store = app[STORE]
    async with store.db.execute(
        "SELECT s.node_id, s.contiguous, COALESCE(c.seq, 0) FROM stream_state s LEFT JOIN handover_cursor c ON c.node_id = s.node_id"
        " WHERE s.stream = 'rec' AND s.contiguous > COALESCE(c.seq, 0)"
    ) as cur:
        todo = [(str(r[0]), int(r[1]), int(r[2])) for r in await cur.fetchall()]
    for node_id, upto, after in todo:
        async with store.db.execute(
            "SELECT seq, payload FROM items WHERE node_id = ? AND stream = 'rec' AND seq > ? AND seq <= ? ORDER BY seq", (node_id, after, upto)
        ) as cur:
            rows = [(int(r[0]), bytes(r[1])) for r in await cur.fetchall()]
        async with transaction(store.db):
            for seq, payload in rows:
                if b'"handover"' not in payload:
                    continue
                try:
                    doc = safejson.loads(payload)
                except ValueError:
                    continue
                if isinstance(doc, dict) and doc.get("type") == "handover":
                    await store.db.execute(
                        "INSERT INTO handovers(handover_id, record_id, node_id, seq, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (str(doc.get("id")), str(doc.get("application_id")), node_id, seq, float(doc.get("at") or 0)),
                    )
            await store.db.execute(
                "INSERT INTO handover_cursor(node_id, seq) VALUES (?, ?) ON CONFLICT (node_id) DO UPDATE SET seq = excluded.seq", (node_id, upto)
            )
    async with store.db.execute("SELECT handover_id, record_id, node_id FROM handovers WHERE applied_at IS NULL ORDER BY at") as cur:
        pending = [(str(r[0]), str(r[1]), str(r[2])) for r in await cur.fetchall()]
    applied = 0
    for hid, record_id, node_id in pending:
        try:
            await set_status(store, record_id, "issued", f"van:{node_id}", app[DOWNLINK].stamp(), notify_sms=False)
            result = "issued"
            applied += 1
        except StatusError as exc:  # e.g. HQ moved it back to "in_progress" meanwhile: kept, shown, not forced
            log.warning("handover %s of %s not applied: %s", hid, record_id, exc.code)
            result = exc.code
        async with transaction(store.db):
            await store.db.execute("UPDATE handovers SET applied_at = ?, result = ? WHERE handover_id = ?", (store.clock.now(), result, hid))
    return applied


async def handover_of(store: HQStore, record_id: str) -> dict[str, Any] | None:
    async with store.db.execute(
        "SELECT handover_id, node_id, at, applied_at, result FROM handovers WHERE record_id = ? ORDER BY at DESC LIMIT 1", (record_id,)
    ) as cur:
        r = await cur.fetchone()
    return None if r is None else {"id": r[0], "node_id": r[1], "at": r[2], "applied_at": r[3], "result": r[4]}


async def log_command(store: HQStore, cmd_id: str, node_id: str, kind: str, username: str) -> None:
    async with transaction(store.db):
        await store.db.execute(
            "INSERT INTO command_log(cmd_id, node_id, kind, username, sent_at) VALUES (?, ?, ?, ?, ?)",
            (cmd_id, node_id, kind, username, store.clock.now()),
        )


async def commands(store: HQStore, limit: int = 20) -> list[dict[str, Any]]:
    async with store.db.execute(
        "SELECT cmd_id, node_id, kind, username, sent_at, acked_at, result FROM command_log ORDER BY sent_at DESC LIMIT ?", (limit,)
    ) as cur:
        return [{"id": r[0], "node_id": r[1], "kind": r[2], "username": r[3], "sent_at": r[4], "acked_at": r[5], "result": r[6]}
                async for r in cur]


async def project_acks(store: HQStore) -> int:
    """Read the vans' ``down_ack`` events HQ has stored since last time; mark edits and commands.  Returns acks seen."""

    async def fold(node_id: str, doc: dict[str, Any]) -> bool:
        if doc.get("type") != "down_ack":
            return False
        table, key = {"recon": ("status_edits", "edit_id"), "cmd": ("command_log", "cmd_id")}.get(str(doc.get("stream")), (None, None))
        if table is not None:
            # The first answer counts: a later "duplicate" must not hide what the van did.
            await store.db.execute(
                f"UPDATE {table} SET acked_at = ?, result = ? WHERE {key} = ? AND node_id = ? AND acked_at IS NULL",
                (float(doc.get("at") or store.clock.now()), str(doc.get("result", "?"))[:20], str(doc.get("id", "")), node_id),
            )
        return True

    return await fold_events(store.db, "ack_cursor", fold)


async def resend_due(app: web.Application, resend_after: float = RESEND_AFTER) -> int:
    """Edits never sent, or sent without an ack for a while: send again.  Returns how many went out."""
    store = app[STORE]
    cutoff = store.clock.now() - resend_after
    async with store.db.execute(
        "SELECT edit_id FROM status_edits WHERE acked_at IS NULL AND (sent_at IS NULL OR sent_at < ?) ORDER BY at LIMIT 200", (cutoff,)
    ) as cur:
        due = [str(r[0]) for r in await cur.fetchall()]
    sent = 0
    for edit_id in due:
        if not await send_edit(app, edit_id):
            break  # no broker: try again next round
        sent += 1
    return sent


async def status_ctx(app: web.Application) -> AsyncIterator[None]:
    """Schema, then one background loop: project acks, resend what the vans have not confirmed."""
    await create_schema(app[STORE])

    async def round_(app: web.Application, resend_after: float) -> None:
        await project_acks(app[STORE])
        await project_handovers(app)
        await resend_due(app, resend_after)

    async with resend_rounds(app, "hq-status-downlink", "status", round_):
        yield
