"""JSON API of the node (contract in docs/api.md: extend, never break)."""

from __future__ import annotations

from aiohttp import web

from mobile_office.web import json_response

from .appkeys import CATALOG, CONFIG, SESSIONS, STORE
from .auth import set_cookie
from .errors import HttpError, Locked, Unauthorized, ValidationFailed
from .intake import parse_application
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
    session = request.app[SESSIONS].create(account.username, account.role)
    resp = json_response({"username": account.username, "role": account.role, "csrf": session.csrf})
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
    store = request.app[STORE]
    if store.locked:
        raise Locked("Сховище заблоковане: увійдіть знову, щоб приймати заяви")
    inp = parse_application(data, request.app[CATALOG])
    saved = await store.create_application(inp.surname, inp.given_name, inp.rnokpp, inp.service_code, session.username)
    return json_response({"id": saved.id, "number": saved.number}, status=201)


async def status(request: web.Request) -> web.Response:
    return json_response(await node_status(request.app))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/v1/login", login)
    app.router.add_post("/api/v1/logout", logout)
    app.router.add_post("/api/v1/applications", create_application)
    app.router.add_get("/api/v1/status", status)
