"""Server-rendered pages of the van UI (work with JavaScript off)."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from .appkeys import CATALOG, CONFIG, SESSIONS, STORE
from .auth import Session, set_cookie
from .errors import Locked, ValidationFailed
from .intake import parse_application
from .status import node_status


async def _page(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    ctx.setdefault("status", await node_status(request.app))
    return aiohttp_jinja2.render_template(template, request, ctx, status=status)


def _session_or_redirect(request: web.Request) -> Session:
    s = request.app[SESSIONS].get(request)
    if s is None:
        raise web.HTTPSeeOther("/login")
    return s


async def login_form(request: web.Request) -> web.Response:
    return await _page(request, "login.html", {"error": None, "username": ""})


async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    account = await request.app[STORE].unlock(username, password) if username and password else None
    if account is None:
        return await _page(request, "login.html", {"error": "Неправильне ім'я користувача або пароль", "username": username}, status=401)
    session = request.app[SESSIONS].create(account.username, account.role)
    resp = web.HTTPSeeOther("/")
    set_cookie(resp, session, request.app[CONFIG].secure_cookies)
    raise resp


async def logout(request: web.Request) -> web.Response:
    s = _session_or_redirect(request)
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    request.app[SESSIONS].drop(s)
    raise web.HTTPSeeOther("/login")


async def intake_form(request: web.Request) -> web.Response:
    s = _session_or_redirect(request)
    return await _page(request, "intake.html", {"session": s, "catalog": request.app[CATALOG], "values": {}, "errors": {}})


async def intake_submit(request: web.Request) -> web.Response:
    s = _session_or_redirect(request)
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    values = {k: str(form.get(k, "")) for k in ("surname", "given_name", "rnokpp", "service_code")}
    store = request.app[STORE]
    try:
        if store.locked:
            raise Locked("Сховище заблоковане: увійдіть знову, щоб приймати заяви")
        inp = parse_application(values, request.app[CATALOG])
    except ValidationFailed as exc:
        ctx = {"session": s, "catalog": request.app[CATALOG], "values": values, "errors": exc.fields, "message": exc.message}
        return await _page(request, "intake.html", ctx, status=422)
    saved = await store.create_application(inp.surname, inp.given_name, inp.rnokpp, inp.service_code, s.username)
    service = request.app[CATALOG].services[inp.service_code]
    return await _page(request, "saved.html", {"session": s, "number": saved.number, "service": service})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", intake_form)
    app.router.add_post("/applications", intake_submit)
