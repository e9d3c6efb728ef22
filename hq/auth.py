"""Who may call HQ's JSON API: a logged-in browser session or a machine token, nobody else.

Every route under ``/api/`` and every ``*.json`` route is covered, whatever
module adds it (the check is a middleware, so a new route cannot forget it);
only ``OPEN`` stays public.  Without credentials the answer is 401 in the
one JSON error shape, never the HTML login page a browser would get.
A token acts with its role (``hq/users.py``), as ``token:NAME``.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from kit.hardening import Guard
from kit.ratelimit import LoginThrottle
from kit.sessions import Session
from kit.web import Handler, json_response, problem_body

from . import tokens
from .appkeys import CONFIG, SESSIONS, STORE, TOKEN_SESSION
from .pages import page

OPEN = frozenset({"/healthz", "/api/v1/openapi.yaml"})
LOGIN_PATHS = frozenset({"/login"})


def is_json_route(path: str) -> bool:
    return path.startswith("/api/") or path.endswith(".json")


def _unauthorised(code: str, message: str) -> web.Response:
    # JSON whatever the client's Accept says (/fleet.json too): a script never gets the login page.
    response = json_response(problem_body(code, message), status=401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="mobile-office-hq"'
    return response


@web.middleware
async def api_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_json_route(request.path) or request.path in OPEN:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        found = await tokens.check(request.app[STORE].db, header[7:].strip())
        if found is None:
            return _unauthorised("invalid_token", "Токен недійсний або відкликаний")
        name, role = found
        now = request.app[CONFIG].clock.monotonic()
        request[TOKEN_SESSION] = Session("", f"token:{name}", role, "", now, created=now)
        return await handler(request)
    if request.app[SESSIONS].get(request) is None:
        return _unauthorised("login_required", "Увійдіть або надішліть токен: Authorization: Bearer …")
    return await handler(request)


def _throttled_message(request: web.Request, wait: float) -> str:
    at = datetime.fromtimestamp(request.app[CONFIG].clock.now() + wait).strftime("%H:%M")
    minutes = max(1, int(-(-wait // 60)))
    return f"Забагато невдалих спроб входу. Спробуйте знову о {at} (за {minutes} хв)."


async def _refusal_page(request: web.Request, username: str, message: str) -> web.StreamResponse:
    return await page(request, "hq_login.html", {"error": message, "username": username}, 429)


def guard(app: web.Application, throttle: LoginThrottle) -> Guard:
    """HQ's guard for ``app[GUARD]``: its one login form, a 429 login page when throttled."""
    return Guard(app[SESSIONS], throttle, LOGIN_PATHS, throttled_message=_throttled_message, refusal_page=_refusal_page)
