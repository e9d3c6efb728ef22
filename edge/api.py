"""JSON API of the node (contract in docs/api.md: extend, never break)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from aiohttp import web

from kit.web import json_response

from . import application_form, delivery, handover, passwords
from .appkeys import CATALOG, CONFIG, SESSIONS, STORE
from .auth import Session, set_cookie
from .errors import HttpError, Locked, Unauthorized, ValidationFailed
from .intake import check_intake, parse_applicant, save_intake
from .status import node_status


async def _json_body(request: web.Request) -> dict[str, object]:
    # Requiring the JSON content type keeps cross-site form posts out (they cannot set it without CORS).
    if request.content_type != "application/json":
        raise HttpError("Очікується Content-Type: application/json", code="unsupported_media_type", status=415)
    try:
        data = await request.json()
    except ValueError as exc:
        raise HttpError("Тіло запиту має бути JSON-об'єктом", code="bad_json") from exc
    if not isinstance(data, dict):
        raise HttpError("Тіло запиту має бути JSON-об'єктом", code="bad_json")
    return data


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def login(request: web.Request) -> web.Response:
    data = await _json_body(request)
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise ValidationFailed("Вкажіть ім'я користувача й пароль", fields={"username": "обов'язкове", "password": "обов'язкове"})
    account = await request.app[STORE].unlock(username, password)
    if account is None:
        raise Unauthorized("Неправильне ім'я користувача або пароль", code="bad_credentials")
    session = passwords.new_session(request, account.username, account.role, account.must_change)
    # password_change_required: a one-time password; everything but POST /api/v1/password answers 403 until it is changed
    resp = json_response({"username": account.username, "role": account.role, "csrf": session.csrf,
                          "password_change_required": account.must_change})
    set_cookie(resp, session, request.app[CONFIG].secure_cookies)
    return resp


async def logout(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    s = sessions.require(request)
    sessions.drop(s)
    return json_response({"status": "logged_out"})


async def create_application(request: web.Request) -> web.Response:
    session = request.app[SESSIONS].require(request)
    data = await _json_body(request)
    intake = await check_intake(data, request.app[CATALOG], request.app[STORE], today=date.fromtimestamp(request.app[CONFIG].clock.now()))
    # the inventory of documents received (issue 18 item 9): optional; each one of the service's documents
    received = application_form.parse_documents_received(data.get("documents_received"), request.app[CATALOG], intake.application.service_codes)
    saved = await save_intake(request.app[STORE], intake, session.username, documents_received=received)
    inp = intake.application
    body: dict[str, object] = {"id": saved[0].id, "number": saved[0].number}
    if inp.package_code:
        body["applications"] = [{"id": a.id, "number": a.number} for a in saved]
    return json_response(body, status=201)


async def record_handover(request: web.Request) -> web.Response:
    """POST /api/v1/applications/{id}/handover: {"receiver", "receiver_document", "relation"?} → 201 {"id"}; HQ gets "issued"."""
    session = await _unlocked_session(request)
    data = await _json_body(request)
    app_id = request.match_info["id"]
    if not re.fullmatch(r"[0-9a-f]{32}", app_id) or await delivery.one(request.app[STORE].db, app_id) is None:
        raise HttpError("Заяву не знайдено", code="not_found", status=404)
    values = {k: data.get(k, "") for k in ("receiver", "receiver_document", "relation")}
    if not all(isinstance(v, str) for v in values.values()):
        raise ValidationFailed("Перевірте поля, позначені червоним", fields={k: "рядок" for k, v in values.items() if not isinstance(v, str)})
    try:
        hid = await handover.record(request.app[STORE], app_id, str(values["receiver"]), str(values["receiver_document"]),
                                    str(values["relation"]), session.username)
    except handover.HandoverError as exc:
        raise HttpError(str(exc), code="not_ready" if "Готово" in str(exc) else "validation_failed", status=409 if "Готово" in str(exc) else 422) from exc
    return json_response({"id": hid, "status": "issued"}, status=201)


async def list_applications(request: web.Request) -> web.Response:
    """Newest first, with the sync ledger's delivery state and HQ's status; ``?status=ready`` filters.  No personal data."""
    request.app[SESSIONS].require(request)
    status = request.query.get("status") or None
    try:
        limit = min(max(int(request.query.get("limit", "200")), 1), 1000)
    except ValueError as exc:
        raise ValidationFailed("Перевірте параметри запиту", fields={"limit": "ціле число 1–1000"}) from exc
    db = request.app[STORE].db
    return json_response({"applications": await delivery.recent(db, limit, status), "waiting": await delivery.waiting(db)})


async def _unlocked_session(request: web.Request) -> Session:
    session = request.app[SESSIONS].require(request)
    if request.app[STORE].locked:
        raise Locked("Сховище заблоковане: увійдіть знову, щоб працювати з даними громадян")
    return session


async def create_applicant(request: web.Request) -> web.Response:
    session = await _unlocked_session(request)
    data = await _json_body(request)
    inp = parse_applicant(data, date.fromtimestamp(request.app[CONFIG].clock.now()))
    applicant_id = await request.app[STORE].create_applicant(inp.fields, session.username)
    return json_response({"id": applicant_id, "warnings": list(inp.warnings)}, status=201)


async def find_applicants(request: web.Request) -> web.Response:
    """POST with a JSON body, never GET: identifiers must not end up in URLs, logs or browser history."""
    session = await _unlocked_session(request)
    q = {k: v for k, v in (await _json_body(request)).items() if isinstance(v, str) and v}
    doc = (q["document_type"], q["document_number"].upper()) if q.get("document_type") and q.get("document_number") else None
    if not (q.get("rnokpp") or q.get("unzr") or doc or (q.get("surname") and q.get("birth_date"))):
        raise ValidationFailed(
            "Вкажіть РНОКПП, УНЗР, документ або прізвище з датою народження",
            fields={"query": "rnokpp | unzr | document_type+document_number | surname+birth_date"},
        )
    found = await request.app[STORE].find_applicants(
        session.username, rnokpp=q.get("rnokpp"), unzr=q.get("unzr"), document=doc, surname=q.get("surname"), birth_date=q.get("birth_date")
    )
    return json_response({"applicants": found})


async def status(request: web.Request) -> web.Response:
    return json_response(await node_status(request.app))


async def openapi(request: web.Request) -> web.FileResponse:
    """This API's description (edge/openapi.yaml), validated and fuzzed by the tests."""
    return web.FileResponse(Path(__file__).parent / "openapi.yaml", headers={"Content-Type": "application/yaml; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/v1/login", login)
    app.router.add_post("/api/v1/logout", logout)
    app.router.add_post("/api/v1/applications", create_application)
    app.router.add_get("/api/v1/applications", list_applications)
    app.router.add_post("/api/v1/applications/{id}/handover", record_handover)
    app.router.add_get("/api/v1/status", status)
    app.router.add_post("/api/v1/applicants", create_applicant)
    app.router.add_post("/api/v1/applicants/search", find_applicants)
    app.router.add_get("/api/v1/openapi.yaml", openapi)
