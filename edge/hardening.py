"""Web hardening of the van UI, as middlewares that cover every route (new ones too).

* CSRF: every unsafe request (POST, PUT, PATCH, DELETE) must come from this
  origin (``Origin`` / ``Sec-Fetch-Site``) and carry a token bound to the
  browser's cookie: the session's token once logged in, before login a
  pre-session token (HMAC of the ``mo_pre`` cookie).  Forms send it in the
  ``csrf`` field, scripts in the ``X-CSRF-Token`` header.  The JSON API
  needs ``Content-Type: application/json`` instead, which a cross-site page
  cannot send without a CORS preflight the node never grants.
* Login throttling (kit/ratelimit.py) around both login routes,
  429 in the one error shape with ``Retry-After`` and a Ukrainian message
  saying when to retry.
* Session fixation: a successful login always gets a fresh token and the
  session the browser came with is ended.
* Cookies: HttpOnly and SameSite=Strict; Secure whenever served over HTTPS.

Handlers read urlencoded forms with ``await request.post()`` (aiohttp keeps
the parsed form, so the handler sees it after the check here).  Multipart
bodies are parsed here too, except on the routes in ``STREAMED_UPLOADS``,
whose handlers stream the upload and check the form's token themselves
(tests/security posts multipart forms without a token to every route).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from kit.ratelimit import LoginThrottle
from kit.web import Handler, HttpProblem, render_problem

from . import i18n
from .appkeys import CONFIG, SESSIONS
from .auth import COOKIE
from .status import node_status
from . import rotation

log = logging.getLogger(__name__)

THROTTLE = web.AppKey("login_throttle", LoginThrottle)
PRE_SECRET = web.AppKey("pre_session_secret", bytes)

PRE_COOKIE = "mo_pre"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_PATHS = frozenset({"/login", "/api/v1/login"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_NEW_PRE = web.RequestKey("hardening_new_pre", str)


def _csrf_failed() -> HttpProblem:
    return HttpProblem("Форма застаріла або надіслана не з цієї сторінки. Оновіть сторінку й спробуйте ще раз.",
                       code="csrf_failed", status=403)


def _lang(request: web.Request) -> str:
    lang = request.cookies.get(i18n.COOKIE, i18n.DEFAULT)
    return lang if lang in i18n.LANGUAGES else i18n.DEFAULT


def _pre_token(request: web.Request, value: str) -> str:
    return hmac.new(request.app[PRE_SECRET], value.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: web.Request) -> str:
    """The token a page rendered for this request must carry in its forms."""
    session = request.app[SESSIONS].get(request)
    if session is not None:
        return session.csrf
    value = request.cookies.get(PRE_COOKIE) or request.get(_NEW_PRE)
    if not value:
        value = request[_NEW_PRE] = secrets.token_urlsafe(24)
    return _pre_token(request, str(value))


async def csrf_context(request: web.Request) -> dict[str, Any]:
    """Jinja context processor: ``{{ csrf_token }}`` in every page."""
    return {"csrf_token": csrf_token(request)}


def _same_origin(request: web.Request) -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser, or an old one: SameSite=Strict keeps the cookie home anyway
        return True
    return origin == f"{request.scheme}://{request.host}"


async def _check_csrf(request: web.Request) -> None:
    if not _same_origin(request):
        raise _csrf_failed()
    if request.path.startswith("/api/"):
        header = request.headers.get(CSRF_HEADER)
        session = request.app[SESSIONS].get(request)
        if header is not None:
            if session is None or not hmac.compare_digest(header, session.csrf):
                raise _csrf_failed()
            return
        if request.content_type != "application/json":
            raise HttpProblem("Очікується Content-Type: application/json", code="unsupported_media_type", status=415)
        return
    if request.content_type == "multipart/form-data" and CSRF_HEADER not in request.headers and _streams_uploads(request):
        # This handler streams its upload (request.multipart()); reading the body here would consume it.
        # The origin check above still applies; the handler checks the form's token (tests/security proves it).
        return
    if request.content_type in FORM_TYPES:
        sent = str((await request.post()).get(CSRF_FIELD, ""))
    else:
        sent = request.headers.get(CSRF_HEADER, "")
    session = request.app[SESSIONS].get(request)
    if session is not None:
        expected = session.csrf
    else:
        pre = request.cookies.get(PRE_COOKIE)
        expected = _pre_token(request, pre) if pre else ""
    if sent and expected and hmac.compare_digest(sent, expected):
        return
    if session is None and request.cookies.get(COOKIE):
        # The session ended while the form was open: log in again, as for a page.
        raise web.HTTPSeeOther("/login?expired=1")
    raise _csrf_failed()


# Routes whose handlers stream multipart uploads (the intake form carries photos too) and check the form's token after reading it.
STREAMED_UPLOADS = frozenset({"/applications", "/applications/{id}/attachments", "/applications/{id}/signature"})


def _streams_uploads(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in STREAMED_UPLOADS


def _harden_cookies(request: web.Request, response: web.StreamResponse) -> None:
    new_pre = request.get(_NEW_PRE)
    if new_pre and PRE_COOKIE not in response.cookies:
        response.set_cookie(PRE_COOKIE, str(new_pre), httponly=True, samesite="Strict", path="/")
    for name, morsel in response.cookies.items():
        if name in (COOKIE, PRE_COOKIE):
            morsel["httponly"] = True
            morsel["samesite"] = "Strict"
        if request.secure:
            morsel["secure"] = True


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in UNSAFE:
        await _check_csrf(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _harden_cookies(request, exc)
        raise
    _harden_cookies(request, response)
    return response


async def _login_username(request: web.Request) -> str:
    if request.path.startswith("/api/"):
        if request.content_type != "application/json":
            return ""
        try:
            data = await request.json()
        except ValueError:
            return ""
        name = data.get("username") if isinstance(data, dict) else None
    else:
        name = (await request.post()).get("username")
    return name if isinstance(name, str) else ""


def throttled_message(request: web.Request, wait: float) -> str:
    at = datetime.fromtimestamp(request.app[CONFIG].clock.now() + wait).strftime("%H:%M")
    minutes = max(1, int(-(-wait // 60)))
    return i18n.translate("login.throttled", _lang(request)).format(time=at, minutes=minutes)


async def _refuse(request: web.Request, username: str, wait: float) -> web.StreamResponse:
    message = throttled_message(request, wait)
    if request.path.startswith("/api/"):
        response: web.StreamResponse = render_problem(request, 429, "too_many_attempts", message)
    else:
        # Refused before the router's handler and aiohttp_jinja2's context middleware: the page context is built here.
        lang = _lang(request)
        ctx = {"error": message, "username": username, "expired": False, "status": await node_status(request.app),
               "session": request.app[SESSIONS].get(request), "t": i18n.translator(lang), "lang": lang,
               "csrf_token": csrf_token(request), "request": request}
        response = aiohttp_jinja2.render_template("login.html", request, ctx, status=429)
    response.headers["Retry-After"] = str(int(-(-wait // 1)))
    return response


@web.middleware
async def login_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method != "POST" or request.path not in LOGIN_PATHS:
        return await handler(request)
    throttle = request.app[THROTTLE]
    username, address = await _login_username(request), request.remote or ""
    wait = throttle.retry_after(username, address)
    if wait > 0:
        return await _refuse(request, username, wait)
    before = request.app[SESSIONS].get(request)
    ok = False
    try:
        response = await handler(request)
        ok = response.status < 300
    except web.HTTPException as exc:
        ok = exc.status in (302, 303)
        raise
    except HttpProblem as exc:
        if exc.status == 401:
            _failed(throttle, username, address)
        raise
    finally:
        if ok:
            throttle.succeeded(username, address)
            # a key rotation received while the store was locked opens now
            try:
                await rotation.apply_pending(request.app)
            except Exception:  # the login itself must not fail; the rotation stays pending
                log.exception("pending key rotation could not be applied")
            if before is not None:
                request.app[SESSIONS].drop(before)  # session fixation: the old token never becomes the new session
    if response.status == 401:
        _failed(throttle, username, address)
    return response


def _failed(throttle: LoginThrottle, username: str, address: str) -> None:
    locked = throttle.failed(username, address)
    if locked:
        # Never the username: people type passwords into it by mistake.
        log.warning("login locked for %.0f s after repeated failures (client %s)", locked, address)


MIDDLEWARES = (csrf_middleware, login_middleware)
