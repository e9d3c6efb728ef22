"""Administrators' passwords: the rules, changing one's own, and the first-login change of a one-time password.

* Rules (``problem``): at least ``password_min_length`` characters, not one of
  the common passwords in ``common_passwords.json`` (also with trailing digits
  and punctuation taken off: "Password2024!" is "password"), not containing
  the username.  Messages in the UI's language (edge/i18n.py).
* ``GET/POST /password`` (page) and ``POST /api/v1/password``
  ``{"old_password", "new_password"}`` → 200: the old password must open the
  keyslot (failures count against the login throttle); the node key is
  rewrapped under the new one, every session of that username ends and the
  caller gets a fresh one.
* An account whose slot is marked ``must_change`` (a printed one-time
  password from ``provision add-node``, or a supervisor's reset) logs in
  normally, but until the password is changed every other page and API call
  answers 403 ``password_change_required`` (``middleware``).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from kit.sessions import Session
from kit.web import Handler, HttpProblem, json_response, wants_json

from . import hardening, i18n, roles
from .appkeys import CONFIG, SESSIONS, STORE
from .auth import COOKIE, set_cookie
from .status import node_status

MUST_CHANGE = "password_change_required"  # key in Session.data
COMMON: frozenset[str] = frozenset(json.loads((Path(__file__).parent / "common_passwords.json").read_text(encoding="utf-8")))
# What a session that must change its password may still reach.
OPEN_PATHS = frozenset({"/password", "/api/v1/password", "/login", "/api/v1/login", "/logout", "/api/v1/logout", "/healthz", "/api/v1/status"})
OPEN_PREFIXES = ("/static/", "/lang/")


def problem(password: str, username: str, min_length: int, lang: str = i18n.DEFAULT) -> str | None:
    """Why ``password`` is refused, in ``lang``; None if it is acceptable."""
    if len(password) < min_length:
        return i18n.translate("password.too_short", lang).format(min=min_length)
    folded = password.casefold()
    if folded in COMMON or folded.rstrip("0123456789!.?@#$%^&*_- ") in COMMON or len(set(folded)) < 4:
        return i18n.translate("password.common", lang)
    if username and username.casefold() in folded:
        return i18n.translate("password.has_username", lang)
    return None


def one_time() -> str:
    """A password to hand over once (a reset, a node key rotation): 16 random URL-safe characters."""
    return secrets.token_urlsafe(12)


def _lang(request: web.Request) -> str:
    lang = request.cookies.get(i18n.COOKIE, i18n.DEFAULT)
    return lang if lang in i18n.LANGUAGES else i18n.DEFAULT


def new_session(request: web.Request, username: str, role: str, must_change: bool) -> Session:
    """A new session for a login or a password change, marked when its password must be changed first."""
    session = request.app[SESSIONS].create(username, role)
    if must_change:
        session.data[MUST_CHANGE] = True
    return session


async def _render(request: web.Request, session: Session, errors: dict[str, str], status: int = 200, message: str = "") -> web.Response:
    lang = _lang(request)
    # Built in full: the 403 is answered from a middleware, before aiohttp_jinja2's context processors run.
    ctx: dict[str, Any] = {
        "session": session, "errors": errors, "message": message, "required": bool(session.data.get(MUST_CHANGE)),
        "hint": i18n.translate("password.hint", lang).format(min=request.app[CONFIG].password_min_length),
        "status": await node_status(request.app), "code": MUST_CHANGE if status == 403 else "",
        "t": i18n.translator(lang), "lang": lang, "allowed": roles.allowed, "request": request, "csrf_token": session.csrf,
    }
    return aiohttp_jinja2.render_template("password.html", request, ctx, status=status)


async def _change(request: web.Request, session: Session, old: str, new: str, repeat: str | None) -> dict[str, str]:
    """Check and apply a change; the errors by field (empty: changed)."""
    lang = _lang(request)
    throttle = request.app[hardening.THROTTLE]
    address = request.remote or ""
    wait = throttle.retry_after(session.username, address)
    if wait > 0:
        raise HttpProblem(hardening.throttled_message(request, wait), code="too_many_attempts", status=429)
    errors: dict[str, str] = {}
    rule = problem(new, session.username, request.app[CONFIG].password_min_length, lang)
    if rule:
        errors["new_password"] = rule
    elif repeat is not None and repeat != new:
        errors["new_password"] = i18n.translate("password.mismatch", lang)
    elif new == old:
        errors["new_password"] = i18n.translate("password.same", lang)
    if errors:
        return errors
    store = request.app[STORE]
    # The old password opens the slot: proof, and the node key the new slot needs (the store may have locked meanwhile).
    if await store.unlock(session.username, old) is None:
        throttle.failed(session.username, address)
        return {"old_password": i18n.translate("password.wrong_old", lang)}
    throttle.succeeded(session.username, address)
    await store.change_password(session.username, new)
    request.app[SESSIONS].drop_user(session.username)  # every other device logged in with the old password is out now
    return {}


async def page(request: web.Request) -> web.Response:
    s = request.app[SESSIONS].get(request)
    if s is None:
        raise web.HTTPSeeOther("/login?expired=1" if request.cookies.get(COOKIE) else "/login")
    return await _render(request, s, {})


async def submit(request: web.Request) -> web.StreamResponse:
    s = request.app[SESSIONS].get(request)
    if s is None:
        raise web.HTTPSeeOther("/login?expired=1" if request.cookies.get(COOKIE) else "/login")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    errors = await _change(request, s, str(form.get("old_password", "")), str(form.get("new_password", "")), str(form.get("repeat", "")))
    if errors:
        return await _render(request, s, errors, 422, i18n.translate("intake.fix_fields", _lang(request)))
    resp = web.HTTPSeeOther(roles.home(s.role))
    set_cookie(resp, new_session(request, s.username, s.role, False), request.app[CONFIG].secure_cookies)
    raise resp


async def api_change(request: web.Request) -> web.Response:
    s = request.app[SESSIONS].require(request)
    if request.content_type != "application/json":
        raise HttpProblem("Очікується Content-Type: application/json", code="unsupported_media_type", status=415)
    try:
        data = await request.json()
    except ValueError as exc:
        raise HttpProblem("Тіло запиту має бути JSON-об'єктом", code="bad_json") from exc
    old, new = (data.get("old_password"), data.get("new_password")) if isinstance(data, dict) else (None, None)
    if not isinstance(old, str) or not isinstance(new, str) or not old or not new:
        raise HttpProblem("Вкажіть поточний і новий паролі", code="validation_failed", status=422,
                          fields={"old_password": "обов'язкове", "new_password": "обов'язкове"})
    errors = await _change(request, s, old, new, None)
    if errors:
        raise HttpProblem(next(iter(errors.values())), code="validation_failed", status=422, fields=errors)
    session = new_session(request, s.username, s.role, False)
    resp = json_response({"status": "changed", "username": s.username, "role": s.role, "csrf": session.csrf})
    set_cookie(resp, session, request.app[CONFIG].secure_cookies)
    return resp


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Until a one-time password is changed, nothing but the change (and logging out) is open."""
    path = request.path
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return await handler(request)
    s = request.app[SESSIONS].get(request)
    if s is None or not s.data.get(MUST_CHANGE):
        return await handler(request)
    message = i18n.translate("password.required", _lang(request))
    if wants_json(request):
        raise HttpProblem(message, code=MUST_CHANGE, status=403)
    return await _render(request, s, {}, 403, message)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/password", page)
    app.router.add_post("/password", submit)
    app.router.add_post("/api/v1/password", api_change)
