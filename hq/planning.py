"""Planning at HQ: home visits assigned to a van's case administrators, sealed to that van.

A visit's life at HQ (``hq_visits``): assigned, possibly rescheduled or
cancelled, then started and finished by the van.  Each change is one
downlink message (``hq_visit_msgs``) on ``mo/v1/{node}/down/assign``; the
first is the assignment itself (``id`` = the visit id), each change after it
``{visit}-v{n}`` with ``visit_id``, ``version`` n and ``status``, carrying the
whole sealed assignment again, so the van applies the highest version
whatever order they arrive in (edge/visits.py).  A message not yet
acknowledged by the van (its ``down_ack``) is sent again every
``status_resend_after`` seconds while the visit's day has not passed, as
pre-registrations are (hq/prereg_admin.py); only the latest version is resent.

HQ never keeps the person's name, address or the address's point in the
clear: they are sealed to the van.  The van states its evidence as the
distance between where it stood and that point (``visit_evidence``'s
``distance_m``), which is what HQ shows.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timezone
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from sync.crypto import wrap_to_public

from .appkeys import CONFIG, DOWNLINK, STORE
from .resend import resend_rounds, send_due
from .db import DB, migrate, transaction
from .errors import HQError
from .i18n import translate
from .events import fold_events
from .sender import NotConnected
from .trips import record_visit_plan

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE hq_visits (
        visit_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, planned_date TEXT, assigned_to TEXT, state TEXT NOT NULL,
        version BIGINT NOT NULL, sealed TEXT NOT NULL, has_point BIGINT NOT NULL, created DOUBLE PRECISION NOT NULL, created_by TEXT NOT NULL,
        started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION, distance_m DOUBLE PRECISION
    );
    CREATE TABLE hq_visit_msgs (
        msg_id TEXT PRIMARY KEY, visit_id TEXT NOT NULL, node_id TEXT NOT NULL, version BIGINT NOT NULL, item TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, sent_at DOUBLE PRECISION, sends BIGINT NOT NULL DEFAULT 0, acked_at DOUBLE PRECISION, result TEXT
    );
    CREATE INDEX hq_visit_msgs_visit ON hq_visit_msgs(visit_id);
    CREATE TABLE visit_cursor (node_id TEXT PRIMARY KEY, seq BIGINT NOT NULL);
    """,
]

# What the dispatcher sees of a visit's delivery (the latest message to the van).
DELIVERY = {"unsent": "Не надіслано (немає зв'язку з брокером)", "sent": "Надіслано, фургон ще не підтвердив",
            "delivered": "Фургон отримав", "failed": "Фургон не прийняв зміну"}
STATES = {"assigned": "Призначено", "cancelled": "Скасовано", "started": "Розпочато", "finished": "Завершено"}


class PlanningError(HQError):
    """An assignment that cannot be made; the message is for people (Ukrainian; ``key`` gives it in the page's language)."""

    def __init__(self, key: str) -> None:
        super().__init__(translate(key, "uk"))
        self.key = key


async def create_schema(db: DB) -> None:
    await migrate(db, "hq_visits", MIGRATIONS)


def sealed_assignment(node_seal: X25519PublicKey, node_id: str, details: dict[str, Any], planned_date: str | None,
                      assigned_to: str | None, visit_id: str | None = None) -> dict[str, Any]:
    """The downlink item: who and where is sealed to the van; the date and the administrator are not personal data."""
    vid = visit_id or uuid.uuid4().hex
    blob = wrap_to_public(json.dumps(details, ensure_ascii=False).encode(), node_seal, f"assign|{node_id}|{vid}".encode())
    return {"id": vid, "kind": "home_visit", "planned_date": planned_date, "assigned_to": assigned_to, "sealed": blob.hex()}


def point(lat: str, lon: str) -> tuple[float, float] | None:
    """The address's point as typed or picked on the map; PlanningError if it is not a point in Ukraine."""
    if not lat.strip() and not lon.strip():
        return None
    try:
        p = (float(lat), float(lon))
    except ValueError as exc:
        raise PlanningError("visits.err.point") from exc
    if not (44.0 <= p[0] <= 53.0 and 22.0 <= p[1] <= 41.0):
        raise PlanningError("visits.err.outside")
    return p


async def assign_home_visit(app: Any, node_id: str, details: dict[str, Any], planned_date: str | None, assigned_to: str | None,
                            actor: str = "dispatcher") -> str:
    """Seal, keep and send; kept even when the broker is down (the loop sends it).  ``details`` may carry the point (lat, lon)."""
    cfg = app[CONFIG]
    seal = cfg.keys.node_seal_keys().get(node_id)
    if seal is None:
        raise PlanningError("visits.err.no_key")
    item = sealed_assignment(seal, node_id, details, planned_date, assigned_to)
    vid, now, db = str(item["id"]), cfg.clock.now(), app[STORE].db
    async with transaction(db):
        await db.execute(
            "INSERT INTO hq_visits(visit_id, node_id, planned_date, assigned_to, state, version, sealed, has_point, created, created_by)"
            " VALUES (?, ?, ?, ?, 'assigned', 0, ?, ?, ?, ?)",
            (vid, node_id, planned_date, assigned_to, item["sealed"], 1 if details.get("lat") is not None else 0, now, actor))
        await db.execute("INSERT INTO hq_visit_msgs(msg_id, visit_id, node_id, version, item, created) VALUES (?, ?, ?, 0, ?, ?)",
                         (vid, vid, node_id, json.dumps(item, separators=(",", ":")), now))
    # categories (no name, no address) for the home-visit reports
    await record_visit_plan(db, vid, node_id, planned_date, assigned_to, list(details.get("categories") or []), now)
    await send(app, vid)
    return vid


async def change(app: Any, visit_id: str, *, cancel: bool = False, planned_date: str | None = None) -> str:
    """Cancel or reschedule: a new version of the whole assignment to the van; returns its message id."""
    db, now = app[STORE].db, app[CONFIG].clock.now()
    async with transaction(db):
        async with db.execute("SELECT node_id, planned_date, assigned_to, state, version, sealed FROM hq_visits WHERE visit_id = ?",
                              (visit_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise PlanningError("visits.err.not_found")
        node_id, old_date, assigned_to, state, version, sealed = row
        if state not in ("assigned",):
            raise PlanningError("visits.err.not_assigned")
        if not cancel:
            try:
                date.fromisoformat(planned_date or "")
            except ValueError as exc:
                raise PlanningError("visits.err.date") from exc
        version, day = int(version) + 1, old_date if cancel else planned_date
        msg_id = f"{visit_id}-v{version}"
        item = {"id": msg_id, "kind": "home_visit", "visit_id": visit_id, "version": version, "status": "cancelled" if cancel else "assigned",
                "planned_date": day, "assigned_to": assigned_to, "sealed": sealed}
        await db.execute("UPDATE hq_visits SET version = ?, planned_date = ?, state = ? WHERE visit_id = ?",
                         (version, day, "cancelled" if cancel else "assigned", visit_id))
        await db.execute("INSERT INTO hq_visit_msgs(msg_id, visit_id, node_id, version, item, created) VALUES (?, ?, ?, ?, ?, ?)",
                         (msg_id, visit_id, node_id, version, json.dumps(item, separators=(",", ":")), now))
    await send(app, msg_id)
    return msg_id


async def send(app: Any, msg_id: str) -> bool:
    """Publish a kept message to its van (signed); False if HQ has no broker connection now (the loop sends it later)."""
    db = app[STORE].db
    async with db.execute("SELECT node_id, item FROM hq_visit_msgs WHERE msg_id = ?", (msg_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        return False
    try:
        await app[DOWNLINK].send(str(row[0]), "assign", [json.loads(row[1])], "призначення не надіслано")
    except NotConnected:
        return False
    async with transaction(db):
        await db.execute("UPDATE hq_visit_msgs SET sent_at = ?, sends = sends + 1 WHERE msg_id = ?", (app[CONFIG].clock.now(), msg_id))
    return True


async def project(db: DB) -> int:
    """Fold the vans' acks of visit messages and the visits' own events into ``hq_visits`` / ``hq_visit_msgs``."""

    async def fold(node_id: str, doc: dict[str, Any]) -> bool:
        kind, vid = doc.get("type"), str(doc.get("id", ""))
        at = float(doc["at"]) if isinstance(doc.get("at"), (int, float)) else None
        if kind == "down_ack" and doc.get("stream") == "assign":
            # The first answer counts: a resend's "duplicate" must not hide what the van did.
            await db.execute("UPDATE hq_visit_msgs SET acked_at = ?, result = ? WHERE msg_id = ? AND node_id = ? AND acked_at IS NULL",
                             (at or 0.0, str(doc.get("result", "?"))[:20], vid, node_id))
            return True
        if kind == "visit" and doc.get("event") in ("started", "finished"):
            column = "started_at" if doc["event"] == "started" else "finished_at"
            await db.execute(f"UPDATE hq_visits SET state = ?, {column} = ? WHERE visit_id = ? AND node_id = ?",
                             (str(doc["event"]), at, vid, node_id))
            return True
        if kind == "visit_evidence" and isinstance(doc.get("distance_m"), (int, float)):
            await db.execute("UPDATE hq_visits SET distance_m = ? WHERE visit_id = ? AND node_id = ?", (float(doc["distance_m"]), vid, node_id))
            return True
        return False

    return await fold_events(db, "visit_cursor", fold)


async def resend_due(app: Any, resend_after: float) -> int:
    """The latest message of each visit the van has not acknowledged, whose day has not passed: send again."""
    cfg, db = app[CONFIG], app[STORE].db
    today = datetime.fromtimestamp(cfg.clock.now(), timezone.utc).date().isoformat()
    async with db.execute(
        "SELECT m.msg_id FROM hq_visit_msgs m JOIN hq_visits v ON v.visit_id = m.visit_id AND v.version = m.version"
        " WHERE m.acked_at IS NULL AND (v.planned_date IS NULL OR v.planned_date >= ?) AND (m.sent_at IS NULL OR m.sent_at < ?)"
        " ORDER BY m.created LIMIT 200",
        (today, cfg.clock.now() - resend_after),
    ) as cur:
        due = [str(r[0]) for r in await cur.fetchall()]
    return await send_due(app, due, send)


def delivery(sent_at: float | None, acked_at: float | None, result: str | None) -> str:
    if acked_at is not None:
        return "delivered" if result in ("applied", "duplicate") else "failed"
    return "sent" if sent_at is not None else "unsent"


async def listing(db: DB, since_day: str, limit: int = 200) -> list[dict[str, Any]]:
    """Visits from ``since_day`` on (and undated ones) with state, delivery and evidence distance; nothing personal."""
    async with db.execute(
        "SELECT v.visit_id, v.node_id, v.planned_date, v.assigned_to, v.state, v.version, v.has_point, v.created, v.created_by,"
        " v.started_at, v.finished_at, v.distance_m, m.sent_at, m.sends, m.acked_at, m.result"
        " FROM hq_visits v JOIN hq_visit_msgs m ON m.visit_id = v.visit_id AND m.version = v.version"
        " WHERE v.planned_date IS NULL OR v.planned_date >= ? ORDER BY v.planned_date, v.created LIMIT ?", (since_day, limit)
    ) as cur:
        keys = ("id", "node_id", "planned_date", "assigned_to", "state", "version", "has_point", "created", "created_by", "started_at",
                "finished_at", "distance_m", "sent_at", "sends", "acked_at", "result")
        rows = [dict(zip(keys, r, strict=True)) for r in await cur.fetchall()]
    for r in rows:
        r["delivery"] = delivery(r["sent_at"], r["acked_at"], r["result"])
        r["has_point"] = bool(r["has_point"])
    return rows


async def visits_ctx(app: web.Application) -> AsyncIterator[None]:
    """Schema, then one loop: fold acks and visit events, resend what the vans have not confirmed."""
    await create_schema(app[STORE].db)

    async def round_(app: web.Application, resend_after: float) -> None:
        await project(app[STORE].db)
        await resend_due(app, resend_after)

    async with resend_rounds(app, "hq-visit-downlink", "home-visit", round_):
        yield
