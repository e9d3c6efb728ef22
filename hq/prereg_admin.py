"""Pre-registering citizens at HQ for a van's day: sealed to that van, sent on ``mo/v1/{node}/down/prereg``.

The dispatcher enters the citizen (name, phone optional), the service, the
van, the date, the time slot and the stop.  The person's details (name,
phone, purpose) are sealed at once to the van's X25519 key with context
``prereg|{node}|{id}`` (edge/prereg.py opens them); HQ keeps only that
sealed downlink item, never the name or phone in plaintext, so HQ's list
shows the day, slot, service, stop, who entered it and the delivery state,
not the person.  The stop (a place, not personal data) travels in the clear
as ``stop``; older vans ignore it.

Delivery state comes from the van's ``evt`` items, read with this module's
own cursor (``prereg_cursor``): the ``down_ack`` for stream ``prereg``
(applied / failed), then ``{"type":"prereg","event":"arrived","ticket"}``
when the citizen came.  Items not acknowledged are sent again every
``status_resend_after`` seconds until their day has passed; the van applies
each id once, so repeats are harmless.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timezone
from typing import Any

from aiohttp import web

from kit.web import HttpProblem, json_response
from sync.crypto import wrap_to_public

from . import catalog_admin, i18n
from .appkeys import CONFIG, DOWNLINK, SESSIONS, STORE
from .resend import resend_rounds, send_due
from .pages import language, page, session
from .trips import places
from .db import DB, migrate, transaction
from .errors import HQError
from .events import fold_events
from .sender import NotConnected

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE hq_preregs (
        prereg_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, day TEXT NOT NULL, slot TEXT, service_code TEXT NOT NULL, stop TEXT,
        item TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, created_by TEXT NOT NULL,
        sent_at DOUBLE PRECISION, sends BIGINT NOT NULL DEFAULT 0, acked_at DOUBLE PRECISION, result TEXT, arrived_at DOUBLE PRECISION, ticket TEXT
    );
    CREATE INDEX hq_preregs_day ON hq_preregs(day);
    CREATE TABLE prereg_cursor (node_id TEXT PRIMARY KEY, seq BIGINT NOT NULL);
    """,
]

SLOT_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
PHONE_RE = re.compile(r"^\+?[0-9 ()-]{10,20}$")
STATES = {"unsent": "Не надіслано (немає зв'язку з брокером)", "sent": "Надіслано, фургон ще не підтвердив",
          "applied": "Доставлено у фургон", "failed": "Фургон не прийняв запис", "arrived": "Громадянин прибув"}


class PreregError(HQError):
    """A pre-registration that cannot be made; ``fields`` say where, for people."""

    def __init__(self, message: str, fields: dict[str, str] | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.fields = fields or {}
        self.status = status


async def create_schema(db: DB) -> None:
    await migrate(db, "hq_prereg", MIGRATIONS)


def prereg_item(node_seal: Any, node_id: str, details: dict[str, Any], day: str, slot: str | None, service_code: str,
                stop: str | None, prereg_id: str | None = None) -> dict[str, Any]:
    """The downlink item (docs/protocol.md): the person sealed to the van; day, slot, service and stop in the clear."""
    pid = prereg_id or uuid.uuid4().hex
    blob = wrap_to_public(json.dumps(details, ensure_ascii=False).encode(), node_seal, f"prereg|{node_id}|{pid}".encode())
    item: dict[str, Any] = {"id": pid, "kind": "prereg", "date": day, "service_code": service_code, "sealed": blob.hex()}
    if slot:
        item["slot"] = slot
    if stop:
        item["stop"] = stop
    return item


async def validate(app: web.Application, form: dict[str, str], lang: str = "uk") -> dict[str, Any]:
    """The form, checked; PreregError with every field that is wrong (the dispatcher sees them all at once), in the page's language."""
    fields: dict[str, str] = {}
    t = i18n.translator(lang)
    name = form.get("name", "").strip()
    if not 3 <= len(name) <= 120:
        fields["name"] = t("prereg.err.name")
    phone = form.get("phone", "").strip()
    if phone and (not PHONE_RE.match(phone) or not 10 <= sum(ch.isdigit() for ch in phone) <= 15):
        fields["phone"] = t("prereg.err.phone")
    node_id = form.get("node_id", "")
    fleet = {n["node_id"] for n in await app[STORE].fleet()}
    if node_id not in fleet:
        fields["node_id"] = t("prereg.err.node")
    elif node_id not in app[CONFIG].keys.node_seal_keys():
        fields["node_id"] = t("prereg.err.no_key")
    services = {s["code"]: s["name"] for s in (await catalog_admin.current(app[STORE].db))["doc"]["services"]}
    code = form.get("service_code", "")
    if code not in services:
        fields["service_code"] = t("prereg.err.service")
    day = form.get("date", "").strip()
    today = datetime.fromtimestamp(app[CONFIG].clock.now(), timezone.utc).date()
    try:
        if date.fromisoformat(day) < today:
            fields["date"] = t("prereg.err.past")
    except ValueError:
        fields["date"] = t("prereg.err.date")
    slot = form.get("slot", "").strip() or None
    if slot is not None and not SLOT_RE.match(slot):
        fields["slot"] = t("prereg.err.slot")
    stop = form.get("stop", "").strip()[:200] or None
    if fields:
        raise PreregError(t("prereg.err.form"), fields)
    details = {"name": name, "phone": phone or None, "purpose": services[code]}
    return {"node_id": node_id, "details": details, "day": day, "slot": slot, "service_code": code, "stop": stop}


async def create(app: web.Application, data: dict[str, Any], username: str) -> tuple[str, bool]:
    """Seal, keep the sealed item, send; the row exists even if the broker is down (the loop sends it later).

    Returns the id and whether it went out now."""
    cfg, db = app[CONFIG], app[STORE].db
    node_id = data["node_id"]
    item = prereg_item(cfg.keys.node_seal_keys()[node_id], node_id, data["details"], data["day"], data["slot"], data["service_code"], data["stop"])
    async with transaction(db):
        await db.execute(
            "INSERT INTO hq_preregs(prereg_id, node_id, day, slot, service_code, stop, item, created, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item["id"], node_id, data["day"], data["slot"], data["service_code"], data["stop"],
             json.dumps(item, separators=(",", ":")), cfg.clock.now(), username),
        )
    return str(item["id"]), await send(app, str(item["id"]))


async def send(app: web.Application, prereg_id: str) -> bool:
    """Publish the kept sealed item to its van (signed); False if HQ has no broker connection now."""
    db = app[STORE].db
    async with db.execute("SELECT node_id, item FROM hq_preregs WHERE prereg_id = ?", (prereg_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        return False
    node_id, item = str(row[0]), json.loads(row[1])
    try:
        await app[DOWNLINK].send(node_id, "prereg", [item], "запис не надіслано")
    except NotConnected:
        return False  # kept sealed; the loop sends it when the broker is back
    async with transaction(db):
        await db.execute("UPDATE hq_preregs SET sent_at = ?, sends = sends + 1 WHERE prereg_id = ?", (app[CONFIG].clock.now(), prereg_id))
    return True


async def project(db: DB) -> int:
    """Fold the vans' acks and arrivals for pre-registrations into ``hq_preregs``; returns how many were seen."""

    async def fold(node_id: str, doc: dict[str, Any]) -> bool:
        if doc.get("type") == "down_ack" and doc.get("stream") == "prereg":
            # The first answer counts: a later "duplicate" (a resend) must not hide what the van did.
            await db.execute(
                "UPDATE hq_preregs SET acked_at = ?, result = ? WHERE prereg_id = ? AND node_id = ? AND acked_at IS NULL",
                (float(doc.get("at") or 0), str(doc.get("result", "?"))[:20], str(doc.get("id", "")), node_id),
            )
            return True
        if doc.get("type") == "prereg" and doc.get("event") == "arrived":
            await db.execute(
                "UPDATE hq_preregs SET arrived_at = ?, ticket = ? WHERE prereg_id = ? AND node_id = ? AND arrived_at IS NULL",
                (float(doc.get("at") or 0), str(doc.get("ticket", ""))[:20], str(doc.get("id", "")), node_id),
            )
            return True
        return False

    return await fold_events(db, "prereg_cursor", fold)


def state(row: dict[str, Any]) -> str:
    if row["arrived_at"] is not None:
        return "arrived"
    if row["result"] is not None:
        return "applied" if row["result"] in ("applied", "duplicate") else "failed"
    return "sent" if row["sent_at"] is not None else "unsent"


async def listing(db: DB, since_day: str, limit: int = 200) -> list[dict[str, Any]]:
    """Pre-registrations from ``since_day`` on, with delivery state; no personal data (HQ has none in the clear)."""
    async with db.execute(
        "SELECT prereg_id, node_id, day, slot, service_code, stop, created, created_by, sent_at, sends, acked_at, result, arrived_at, ticket"
        " FROM hq_preregs WHERE day >= ? ORDER BY day, slot, created LIMIT ?", (since_day, limit)
    ) as cur:
        keys = ("id", "node_id", "date", "slot", "service_code", "stop", "created", "created_by", "sent_at", "sends", "acked_at", "result",
                "arrived_at", "ticket")
        rows = [dict(zip(keys, r, strict=True)) for r in await cur.fetchall()]
    for r in rows:
        r["state"] = state(r)
    return rows


async def resend_due(app: web.Application, resend_after: float) -> int:
    """Items the van has not acknowledged (never sent, or sent a while ago) whose day has not passed: send again."""
    cfg, db = app[CONFIG], app[STORE].db
    today = datetime.fromtimestamp(cfg.clock.now(), timezone.utc).date().isoformat()
    async with db.execute(
        "SELECT prereg_id FROM hq_preregs WHERE acked_at IS NULL AND day >= ? AND (sent_at IS NULL OR sent_at < ?) ORDER BY created LIMIT 200",
        (today, cfg.clock.now() - resend_after),
    ) as cur:
        due = [str(r[0]) for r in await cur.fetchall()]
    return await send_due(app, due, send)


# -- web ------------------------------------------------------------------------
def _today(app: web.Application) -> str:
    return datetime.fromtimestamp(app[CONFIG].clock.now(), timezone.utc).date().isoformat()


async def prereg_page(request: web.Request, errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
                      status: int = 200) -> web.Response:
    s = session(request)
    app = request.app
    await project(app[STORE].db)
    cur = await catalog_admin.current(app[STORE].db)
    ctx = {"session": s, "rows": await listing(app[STORE].db, _today(app)), "states": STATES, "errors": errors or {},
           "values": values or {"date": _today(app)}, "nodes": sorted(n["node_id"] for n in await app[STORE].fleet()),
           "services": sorted(cur["doc"]["services"], key=lambda x: x["code"]), "places": places(),
           "sent": request.query.get("sent"), "queued": request.query.get("queued")}
    return await page(request, "prereg.html", ctx, status=status)


async def prereg_get(request: web.Request) -> web.Response:
    return await prereg_page(request)


async def prereg_submit(request: web.Request) -> web.Response:
    s = session(request, "command")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    values = {k: str(form.get(k, "")) for k in ("name", "phone", "node_id", "service_code", "date", "slot", "stop")}
    try:
        data = await validate(request.app, values, language(request))
    except PreregError as exc:
        # The page again with what was typed (the name stays in the browser only, never in HQ's store).
        return await prereg_page(request, exc.fields, values, status=422)
    pid, sent = await create(request.app, data, s.username)
    raise web.HTTPSeeOther(f"/prereg?sent={pid}" if sent else f"/prereg?queued={pid}")


async def prereg_resend(request: web.Request) -> web.Response:
    s = session(request, "command")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    if not await send(request.app, request.match_info["id"]):
        raise HttpProblem("Немає зв'язку з брокером або запису немає: не надіслано", code="broker_down", status=503)
    raise web.HTTPSeeOther("/prereg")


async def prereg_json(request: web.Request) -> web.Response:
    session(request)
    db = request.app[STORE].db
    await project(db)
    return json_response({"preregistrations": await listing(db, request.query.get("from") or _today(request.app))})


async def _prereg_ctx(app: web.Application) -> AsyncIterator[None]:
    """Schema, then one loop: fold acks and arrivals, resend what the vans have not confirmed."""
    await create_schema(app[STORE].db)

    async def round_(app: web.Application, resend_after: float) -> None:
        await project(app[STORE].db)
        await resend_due(app, resend_after)

    async with resend_rounds(app, "hq-prereg-downlink", "pre-registration", round_):
        yield


def add_routes(app: web.Application) -> None:
    """One line in hq/app.py, after the store's and ingest's cleanup contexts."""
    app.cleanup_ctx.append(_prereg_ctx)
    app.router.add_get("/prereg", prereg_get)
    app.router.add_post("/prereg", prereg_submit)
    app.router.add_post("/prereg/{id}/resend", prereg_resend)
    app.router.add_get("/api/v1/prereg", prereg_json)
