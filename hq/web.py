"""HQ's pages: login, fleet dashboard, record vault, commands to the vans."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from kit import i18n as lang_mech
from kit.sessions import Session, Sessions
from kit.tasks import LOOPS, background
from kit.web import HttpProblem, json_response
from provisioning.rotation import command_args
from sync.crypto import unwrap_with_private, wrap_to_public
from sync.downlink import COMMANDS
from sync.errors import CryptoError

from . import appstatus, attachments, export, fleet, planning, sms, users, vault
from .appkeys import CONFIG, DOWNLINK, SESSIONS, STORE, WORKER
from .pages import allow_tiles, language, opening_reason, page, session, tile_origin, tr  # noqa: F401  (tile_origin: imported from here by tests)


async def login_form(request: web.Request) -> web.Response:
    return await page(request, "hq_login.html", {"error": None, "username": ""})


async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    role = await users.check_password(request.app[STORE].db, username, password) if username and password else None
    if role is None:
        return await page(request, "hq_login.html", {"error": tr(request, "login.failed"), "username": username}, 401)
    sessions: Sessions = request.app[SESSIONS]
    session = sessions.create(username, role)
    resp = web.HTTPSeeOther("/")
    sessions.set_cookie(resp, session, secure=request.secure)
    raise resp


async def logout(request: web.Request) -> web.Response:
    s = session(request)
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    request.app[SESSIONS].drop(s)
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(request.app[SESSIONS].cookie, path="/")
    raise resp


async def dashboard(request: web.Request) -> web.Response:
    session(request)
    store = request.app[STORE]
    now = request.app[CONFIG].clock.now()
    lang = language(request)
    view = await fleet.fleet_view(store, now, lang)
    since = now - 24 * 3600
    tracks = {n["node_id"]: await fleet.track(store, n["node_id"], since) for n in view["nodes"]}
    ctx = {"view": view, "stats": await store.stats(), "ingest_up": request.app[WORKER].connected,
           "map": fleet.svg_map(tracks, view["nodes"], lang=lang), "commands": sorted(COMMANDS), "categories": CATEGORIES,
           "sent_commands": await appstatus.commands(store), "tile_url": request.app[CONFIG].tile_url,
           "tile_attribution": request.app[CONFIG].tile_attribution,
           "map_data": fleet.map_data(tracks, view["nodes"])}
    resp = await page(request, "dashboard.html", ctx)
    tiles = request.app[CONFIG].tile_url
    if tiles:
        # The one page that loads images from elsewhere: the configured tile server, nothing more.
        allow_tiles(resp, tiles)
    return resp


async def fleet_live(request: web.Request) -> web.Response:
    """What the dashboard's script polls: the fleet with alerts, as of now."""
    session(request)
    # The page's script shows these alerts: in the page's language (a client without the cookie gets Ukrainian, as before).
    view = await fleet.fleet_view(request.app[STORE], request.app[CONFIG].clock.now(), language(request))
    view["commands"] = await appstatus.commands(request.app[STORE])  # the console's acks, live
    return json_response(view)


def _vault_keys(request: web.Request) -> vault.VaultKeys:
    return vault.VaultKeys.of(request.app[CONFIG].keys.seal_ring)


def _filter_and_page(request: web.Request, q: Any) -> tuple[vault.RecordFilter, int, int]:
    f = vault.RecordFilter.from_mapping(q)
    try:
        limit, offset = int(q.get("limit", "50") or 50), int(q.get("offset", "0") or 0)
    except ValueError:
        limit, offset = 50, 0
    return f, max(1, min(limit, vault.PAGE_MAX)), max(0, offset)


async def _search(request: web.Request, f: vault.RecordFilter, s: Session, limit: int, offset: int,
                  ids: list[str] | None = None, cap: int = vault.PAGE_MAX) -> tuple[list[dict[str, Any]], int]:
    # The identifier search opens records to index them: only for those who may open records.
    keys = _vault_keys(request) if f.identifier and users.allowed(s.role, "open_records") else None
    if f.identifier and keys is None:
        raise HttpProblem("Ваша роль не дає доступу до цієї дії", code="forbidden", status=403)
    try:
        return await vault.search(request.app[STORE], f, keys, limit, offset, ids, cap)
    except vault.VaultError as exc:
        raise HttpProblem(tr(request, "error.bad_filter"), code="bad_filter", status=422) from exc


async def records(request: web.Request) -> web.Response:
    """The list with search and paging; an identifier comes by POST (never in a URL or a log)."""
    s = session(request)
    q: Any = request.query
    if request.method == "POST":
        q = await request.post()
        request.app[SESSIONS].check_csrf(s, str(q.get("csrf", "")))
    f, limit, offset = _filter_and_page(request, q)
    recs, total = await _search(request, f, s, limit, offset)
    plain = {k: v for k, v in vars(f).items() if v and k != "identifier"}
    return await page(request, "records.html", {
        "records": recs, "status": {r["id"]: r["status"] for r in recs}, "labels": appstatus.LABELS, "statuses": appstatus.STATUSES,
        "status_set": request.query.get("status_set"), "f": f, "total": total, "limit": limit, "offset": offset,
        "prev_q": urlencode({**plain, "limit": limit, "offset": max(0, offset - limit)}),
        "next_q": urlencode({**plain, "limit": limit, "offset": offset + limit}),
        "nodes": sorted({n["node_id"] for n in await request.app[STORE].fleet()})})


async def record_open(request: web.Request) -> web.Response:
    s = session(request, "open_records")
    reason = await opening_reason(request, s)
    try:
        rec = await vault.open_record(request.app[STORE], request.app[CONFIG].keys.seal_ring, request.match_info["id"], s.username, reason)
    except vault.VaultError as exc:
        raise HttpProblem(tr(request, "error.not_found"), code="not_found", status=404) from exc
    openings = await vault.openings(request.app[STORE], request.match_info["id"])
    store = request.app[STORE]
    cur = await appstatus.current(store, rec["id"])
    edits = await appstatus.history(store, rec["id"])
    for e in edits:  # a refusal's reason, opened with HQ's key on this audited opening only
        blob = e.pop("reason_sealed", None)
        e["reason"] = _open_reason(request, rec["id"], blob) if blob else ""
    ctx = {"rec": rec, "openings": openings, "status": cur, "labels": appstatus.LABELS, "next_statuses": appstatus.TRANSITIONS[cur],
           "edits": edits, "notices": await sms.notices(store, rec["id"]), "handover": await appstatus.handover_of(store, rec["id"]),
           "files": await attachments.list_for_record(store, rec["id"])}
    return await page(request, "record.html", ctx)


def _refusal_contexts(node_id: str, record_id: str) -> tuple[bytes, bytes]:
    # the van's context must match edge/handover.py refusal_context
    return f"refusal|{node_id}|{record_id}".encode(), f"refusal-hq|{record_id}".encode()


def _open_reason(request: web.Request, record_id: str, blob_hex: str) -> str:
    try:
        return unwrap_with_private(bytes.fromhex(blob_hex), request.app[CONFIG].keys.seal, _refusal_contexts("", record_id)[1]).decode()
    except (ValueError, CryptoError):
        return "(причину не вдалося відкрити)"


def _export_response(request: web.Request, doc: dict[str, Any], fmt: str) -> web.Response:
    stamp = str(doc["exported_at"]).replace(":", "").replace("-", "")[:15]
    name = f"mo-records-v1-{stamp}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    if fmt == "csv":
        # BOM: a spreadsheet opens the Cyrillic right; csv readers with utf-8-sig read it back
        return web.Response(text="\ufeff" + export.to_csv(doc), content_type="text/csv", charset="utf-8", headers=headers)
    resp = json_response(doc)
    resp.headers.update(headers)
    return resp


async def _export(request: web.Request, s: Session, q: Any, reason: str, ids: list[str] | None) -> web.Response:
    if not users.allowed(s.role, "export_records"):
        raise HttpProblem("Ваша роль не дає доступу до цієї дії", code="forbidden", status=403)
    f = vault.RecordFilter.from_mapping(q)
    fmt = str(q.get("format", "json"))
    cfg = request.app[CONFIG]
    try:
        doc = await export.export(request.app[STORE], _vault_keys(request), f, ids, s.username, reason, fmt, cfg.export_max_records)
    except export.ExportError as exc:
        msg = tr(request, "error.bad_format") if exc.code == "bad_format" else str(exc)
        raise HttpProblem(msg, code=exc.code, status=422) from exc
    except vault.VaultError as exc:
        raise HttpProblem(tr(request, "error.bad_filter"), code="bad_filter", status=422) from exc
    return _export_response(request, doc, fmt)


async def export_form(request: web.Request) -> web.Response:
    """The records page's export: the selected records (``id``), else everything the search matches."""
    s = session(request, "open_records")
    reason = await opening_reason(request, s)
    form = await request.post()
    ids = [str(i) for i in form.getall("id", [])] or None
    return await _export(request, s, form, reason, ids)


async def export_api(request: web.Request) -> web.Response:
    """The back office's importer: ``GET /api/v1/records/export?reason=...&format=json|csv&<filter>`` with a machine token.

    No identifier in a URL (it would be personal data in logs): search by identifier on the page.
    """
    s = session(request)
    q = request.query
    if q.get("identifier"):
        raise HttpProblem("Пошук за ідентифікатором не передається в адресі; використайте сторінку", code="identifier_in_url", status=422,
                          fields={"identifier": "не в адресі"})
    reason = str(q.get("reason", "")).strip()
    if len(reason) < 3:
        raise HttpProblem(tr(request, "error.reason_required"), code="reason_required", status=422,
                          fields={"reason": tr(request, "error.required")})
    ids = [str(i) for i in q.getall("id", [])] or None
    return await _export(request, s, q, reason[:200], ids)


async def set_language(request: web.Request) -> web.Response:
    lang = request.match_info["lang"]
    if lang not in lang_mech.LANGUAGES:
        raise HttpProblem("Невідома мова", code="unknown_language", status=404)
    resp = web.HTTPSeeOther(lang_mech.local_path(request.query.get("next", "/")))
    resp.set_cookie(lang_mech.COOKIE, lang, max_age=365 * 24 * 3600, samesite="Strict", path="/", httponly=True)
    raise resp


async def vault_index_ctx(app: web.Application) -> AsyncIterator[None]:
    """The keyed identifier index, kept up to date by a supervised loop (a search also catches up first)."""
    cfg = app[CONFIG]
    await vault.create_schema(app[STORE])
    keys = vault.VaultKeys.of(cfg.keys.seal_ring)

    async def loop() -> None:
        while True:
            await vault.refresh_index(app[STORE], keys)  # a failing round is logged and restarted by the supervisor
            await cfg.clock.sleep(cfg.vault_index_interval)

    async with background(loop, "hq-vault-index", app[LOOPS]):
        yield


async def record_status(request: web.Request) -> web.Response:
    """A records officer (or admin) sets the status; it is audited and flows back to the van."""
    s = session(request, "open_records")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    store, cfg = request.app[STORE], request.app[CONFIG]
    new_status, reason = str(form.get("status", "")), str(form.get("reason", "")).strip()
    if new_status == "refused" and not reason:
        raise HttpProblem("Вкажіть причину відмови: її отримає громадянин", code="reason_required", status=422,
                          fields={"reason": "причина відмови обов'язкова"})
    if len(reason) > 2000:
        raise HttpProblem("Причина відмови: до 2000 символів", code="validation_failed", status=422, fields={"reason": "до 2000 символів"})

    def seal_reason(node_id: str, record_id: str) -> tuple[str | None, str]:
        """The reason sealed to the van (it prints it for the citizen) and to HQ; never in clear on disk or wire."""
        van_ctx, hq_ctx = _refusal_contexts(node_id, record_id)
        van_key = cfg.keys.node_seal_keys().get(node_id)
        van = wrap_to_public(reason.encode(), van_key, van_ctx).hex() if van_key is not None else None
        return van, wrap_to_public(reason.encode(), cfg.keys.seal_public, hq_ctx).hex()

    try:
        edit = await appstatus.set_status(store, request.match_info["id"], new_status, s.username,
                                          request.app[DOWNLINK].stamp(), notify_sms=bool(cfg.sms_url),
                                          seal_reason=seal_reason if new_status == "refused" else None)
    except appstatus.StatusError as exc:
        raise HttpProblem(str(exc), code=exc.code, status=404 if exc.code == "not_found" else 422,
                          fields=None if exc.code == "not_found" else {"status": str(exc)}) from exc
    # Not connected now: the status loop sends it when the broker is back (hq/appstatus.py).
    await appstatus.send_edit(request.app, edit["edit_id"])
    sender = request.app.get(sms.SENDER)
    if sender is not None and edit["status"] == "ready":
        sender.wake.set()
    async with store.db.execute("SELECT number FROM records WHERE record_id = ?", (edit["record_id"],)) as c:
        row = await c.fetchone()
    raise web.HTTPSeeOther(f"/records?status_set={row[0] if row else ''}")


async def record_status_json(request: web.Request) -> web.Response:
    """Status, its audited changes with the van's confirmation, and SMS notices: no personal data."""
    session(request)
    store, rid = request.app[STORE], request.match_info["id"]
    async with store.db.execute("SELECT number, node_id FROM records WHERE record_id = ?", (rid,)) as c:
        row = await c.fetchone()
    if row is None:
        raise HttpProblem("Заяву не знайдено", code="not_found", status=404)
    return json_response({"id": rid, "number": row[0], "node_id": row[1], "status": await appstatus.current(store, rid),
                          "edits": [{k: v for k, v in e.items() if k != "reason_sealed"} | {"reason": bool(e.get("reason_sealed"))}
                                    for e in await appstatus.history(store, rid)],
                          "handover": await appstatus.handover_of(store, rid),
                          "sms": [{k: v for k, v in n.items() if k != "record_id"} for n in await sms.notices(store, rid)]})


async def send_command(request: web.Request) -> web.Response:
    s = session(request, "command")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    node_id, kind = str(form.get("node_id", "")), str(form.get("kind", ""))
    if kind not in COMMANDS:
        raise HttpProblem(tr(request, "fleet.err.command"), code="unknown_command", status=422, fields={"kind": tr(request, "fleet.err.command_field")})
    store = request.app[STORE]
    if node_id not in {n["node_id"] for n in await store.fleet()}:
        raise HttpProblem(tr(request, "fleet.err.node"), code="unknown_node", status=422, fields={"node_id": tr(request, "fleet.err.node_field")})
    cmd_id = uuid.uuid4().hex[:12]
    args = command_args(request.app[CONFIG].keys, node_id, kind)  # sealed new keys, HQ's sealing key
    await request.app[DOWNLINK].command(node_id, cmd_id, kind, **args)  # NotConnected: 503 broker_down
    await appstatus.log_command(store, cmd_id, node_id, kind, s.username)  # the console shows the van's ack
    raise web.HTTPSeeOther(f"/?sent={kind}:{node_id}")


CATEGORIES = ("age80", "disability1", "disability", "incapacitated", "idp", "veteran")


async def assign_visit(request: web.Request) -> web.Response:
    s = session(request, "command")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    node_id = str(form.get("node_id", ""))
    details: dict[str, Any] = {"name": str(form.get("name", "")).strip()[:120], "address": str(form.get("address", "")).strip()[:200],
                               "purpose": str(form.get("purpose", "")).strip()[:200],
                               "categories": [c for c in form.getall("category", []) if c in CATEGORIES]}
    if not details["name"] or not details["address"]:
        raise HttpProblem(tr(request, "visits.err.person"), code="validation_failed", status=422,
                          fields={"name": tr(request, "error.required"), "address": tr(request, "error.required")})
    try:
        # The address's point (typed, or picked on the map) travels sealed with the details: HQ keeps no point.
        p = planning.point(str(form.get("lat", "")), str(form.get("lon", "")))
    except planning.PlanningError as exc:
        msg = tr(request, exc.key)
        raise HttpProblem(msg, code="validation_failed", status=422, fields={"lat": msg, "lon": msg}) from exc
    if p is not None:
        details["lat"], details["lon"] = p
    try:
        vid = await planning.assign_home_visit(request.app, node_id, details, str(form.get("planned_date", "")) or None,
                                               str(form.get("assigned_to", "")) or None, s.username)
    except planning.PlanningError as exc:
        raise HttpProblem(tr(request, exc.key), code="assign_failed", status=409) from exc
    raise web.HTTPSeeOther(f"/visits?assigned={vid}")


async def visits_page(request: web.Request) -> web.Response:
    s = session(request)
    db = request.app[STORE].db
    await planning.project(db)
    today = datetime.fromtimestamp(request.app[CONFIG].clock.now(), timezone.utc).date().isoformat()
    ctx = {"session": s, "rows": await planning.listing(db, request.query.get("from") or today), "delivery": planning.DELIVERY,
           "states": planning.STATES, "assigned": request.query.get("assigned"), "changed": request.query.get("changed")}
    return await page(request, "visits.html", ctx)


async def visits_json(request: web.Request) -> web.Response:
    session(request)
    db = request.app[STORE].db
    await planning.project(db)
    today = datetime.fromtimestamp(request.app[CONFIG].clock.now(), timezone.utc).date().isoformat()
    return json_response({"visits": await planning.listing(db, request.query.get("from") or today)})


async def visit_change(request: web.Request) -> web.Response:
    """Cancel or reschedule a visit from HQ: a new version to the van, resent until it acknowledges."""
    s = session(request, "command")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    action = request.match_info["action"]
    try:
        await planning.change(request.app, request.match_info["id"], cancel=action == "cancel",
                              planned_date=str(form.get("planned_date", "")).strip() or None)
    except planning.PlanningError as exc:
        msg = tr(request, exc.key)
        raise HttpProblem(msg, code="change_failed", status=422, fields={"planned_date": msg}) from exc
    raise web.HTTPSeeOther(f"/visits?changed={request.match_info['id']}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", dashboard)
    app.router.add_get("/fleet.json", fleet_live)
    app.router.add_get("/records", records)
    app.router.add_post("/records", records)  # a search by identifier: in the body, never in the URL
    app.router.add_post("/records/export", export_form)
    app.router.add_get("/api/v1/records/export", export_api)
    app.router.add_get("/lang/{lang}", set_language)
    app.cleanup_ctx.append(vault_index_ctx)
    app.router.add_post("/records/{id}", record_open)
    app.router.add_post("/commands", send_command)
    app.router.add_post("/visits", assign_visit)
    app.router.add_get("/visits", visits_page)
    app.router.add_get("/api/v1/visits", visits_json)
    app.router.add_post("/visits/{id}/{action:cancel|reschedule}", visit_change)
    app.cleanup_ctx.append(planning.visits_ctx)  # after the store's and ingest's contexts (hq/app.py)
    app.router.add_post("/records/{id}/status", record_status)
    app.router.add_get("/api/v1/records/{id}/status", record_status_json)
