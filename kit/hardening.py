"""Web hardening shared by the van UI and HQ, as middlewares that cover every route (new ones too).

* CSRF: every unsafe request (POST, PUT, PATCH, DELETE) must come from this
  origin (``Origin`` / ``Sec-Fetch-Site``) and carry a token bound to the
  browser's cookie: the session's token once logged in, before login a
  pre-session token (HMAC of the ``mo_pre`` cookie).  Forms send it in the
  ``csrf`` field, scripts in the ``X-CSRF-Token`` header.  The JSON API
  needs ``Content-Type: application/json`` instead, which a cross-site page
  cannot send without a CORS preflight the server never grants.  A request
  that carries ``Authorization: Bearer`` and no session cookie is a machine
  client, not a browser: no ambient credential to forge, so no CSRF check.
* Login throttling (kit/ratelimit.py) around the login routes, 429 in the
  one error shape with ``Retry-After`` and a message saying when to retry.
* Session fixation: a successful login always gets a fresh token and the
  session the browser came with is ended.
* Cookies: HttpOnly and SameSite=Strict; Secure whenever served over HTTPS.

Each app puts one ``Guard`` under ``GUARD``: its sessions, throttle and the
few things that differ between the van and HQ (login paths, how a refused
login page is drawn, what happens after a login).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from .ratelimit import LoginThrottle
from .sessions import Sessions
from .web import Handler, HttpProblem, render_problem, wants_json

log = logging.getLogger(__name__)

PRE_COOKIE = "mo_pre"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_NEW_PRE = web.RequestKey("hardening_new_pre", str)

# (request, username, message) -> the login page answered with 429
RefusalPage = Callable[[web.Request, str, str], Awaitable[web.StreamResponse]]


def _default_message(request: web.Request, wait: float) -> str:
    minutes = max(1, int(-(-wait // 60)))
    return f"Забагато невдалих спроб входу. Спробуйте ще раз за {minutes} хв."


@dataclass
class Guard:
    sessions: Sessions
    throttle: LoginThrottle
    login_paths: frozenset[str]
    pre_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    # Routes whose handlers stream multipart uploads and check the form's token after reading it.
    streamed_uploads: frozenset[str] = frozenset()
    throttled_message: Callable[[web.Request, float], str] = _default_message
    refusal_page: RefusalPage | None = None  # None: the one error shape for forms too
    after_login: Callable[[web.Request], Awaitable[None]] | None = None
    expired_redirect: str = "/login?expired=1"


GUARD = web.AppKey("web_guard", Guard)


def csrf_failed() -> HttpProblem:
    return HttpProblem("Форма застаріла або надіслана не з цієї сторінки. Оновіть сторінку й спробуйте ще раз.",
                       code="csrf_failed", status=403)


def _equal(a: str, b: str) -> bool:
    # bytes: compare_digest refuses non-ASCII str, and a forged token may be anything
    return hmac.compare_digest(a.encode(), b.encode())


def _pre_token(guard: Guard, value: str) -> str:
    return hmac.new(guard.pre_secret, value.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: web.Request) -> str:
    """The token a page rendered for this request must carry in its forms."""
    guard = request.app[GUARD]
    session = guard.sessions.get(request)
    if session is not None:
        return session.csrf
    value = request.cookies.get(PRE_COOKIE) or request.get(_NEW_PRE)
    if not value:
        value = request[_NEW_PRE] = secrets.token_urlsafe(24)
    return _pre_token(guard, str(value))


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


def is_machine_client(request: web.Request, guard: Guard) -> bool:
    """A bearer token and no session cookie on an API route: nothing a browser would send on its own (forms are never exempt)."""
    return (request.path.startswith("/api/") and request.headers.get("Authorization", "").startswith("Bearer ")
            and guard.sessions.cookie not in request.cookies)


def _streams_uploads(request: web.Request, guard: Guard) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in guard.streamed_uploads


async def _check_csrf(request: web.Request, guard: Guard) -> None:
    if is_machine_client(request, guard):
        return
    if not _same_origin(request):
        raise csrf_failed()
    session = guard.sessions.get(request)
    if request.path.startswith("/api/"):
        header = request.headers.get(CSRF_HEADER)
        if header is not None:
            if session is None or not _equal(header, session.csrf):
                raise csrf_failed()
            return
        if request.content_type != "application/json":
            raise HttpProblem("Очікується Content-Type: application/json", code="unsupported_media_type", status=415)
        return
    if request.content_type == "multipart/form-data" and CSRF_HEADER not in request.headers and _streams_uploads(request, guard):
        # This handler streams its upload (request.multipart()); reading the body here would consume it.
        # The origin check above still applies; the handler checks the form's token.
        return
    if request.content_type in FORM_TYPES:
        sent = str((await request.post()).get(CSRF_FIELD, ""))
    else:
        sent = request.headers.get(CSRF_HEADER, "")
    if session is not None:
        expected = session.csrf
    else:
        pre = request.cookies.get(PRE_COOKIE)
        expected = _pre_token(guard, pre) if pre else ""
    if sent and expected and _equal(sent, expected):
        return
    if session is None and request.cookies.get(guard.sessions.cookie):
        # The session ended while the form was open: log in again, as for a page.
        raise web.HTTPSeeOther(guard.expired_redirect)
    raise csrf_failed()


def _harden_cookies(request: web.Request, response: web.StreamResponse, guard: Guard) -> None:
    new_pre = request.get(_NEW_PRE)
    if new_pre and PRE_COOKIE not in response.cookies:
        response.set_cookie(PRE_COOKIE, str(new_pre), httponly=True, samesite="Strict", path="/")
    for name, morsel in response.cookies.items():
        if name in (guard.sessions.cookie, PRE_COOKIE):
            morsel["httponly"] = True
            morsel["samesite"] = "Strict"
        if request.secure:
            morsel["secure"] = True


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD]
    if request.method in UNSAFE:
        await _check_csrf(request, guard)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _harden_cookies(request, exc, guard)
        raise
    _harden_cookies(request, response, guard)
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


async def _refuse(request: web.Request, guard: Guard, username: str, wait: float) -> web.StreamResponse:
    message = guard.throttled_message(request, wait)
    if wants_json(request) or guard.refusal_page is None:
        response: web.StreamResponse = render_problem(request, 429, "too_many_attempts", message)
    else:
        response = await guard.refusal_page(request, username, message)
    response.headers["Retry-After"] = str(int(-(-wait // 1)))
    return response


@web.middleware
async def login_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD]
    if request.method != "POST" or request.path not in guard.login_paths:
        return await handler(request)
    throttle = guard.throttle
    username, address = await _login_username(request), request.remote or ""
    wait = throttle.retry_after(username, address)
    if wait > 0:
        return await _refuse(request, guard, username, wait)
    before = guard.sessions.get(request)
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
            if guard.after_login is not None:
                try:
                    await guard.after_login(request)
                except Exception:  # the login itself must not fail
                    log.exception("work after a login failed")
            if before is not None:
                guard.sessions.drop(before)  # session fixation: the old token never becomes the new session
    if response.status == 401:
        _failed(throttle, username, address)
    return response


def _failed(throttle: LoginThrottle, username: str, address: str) -> None:
    locked = throttle.failed(username, address)
    if locked:
        # Never the username: people type passwords into it by mistake.
        log.warning("login locked for %.0f s after repeated failures (client %s)", locked, address)


MIDDLEWARES = (csrf_middleware, login_middleware)


def forwarded_scheme(trusted: frozenset[str]) -> Middleware:
    """Behind a TLS-terminating proxy: believe its ``X-Forwarded-Proto`` and ``X-Forwarded-For``, from the configured addresses only.

    Anyone else could claim https and get Secure cookies and an https origin over plain HTTP.  The client's
    address is the last one the proxy appended, so login throttling counts clients, not the proxy.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trusted and request.remote in trusted:
            proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            client = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
            changes: dict[str, str] = {}
            if proto in ("http", "https"):
                changes["scheme"] = proto
            if client:
                changes["remote"] = client
            if changes:
                request = request.clone(**changes)  # type: ignore[arg-type]
        return await handler(request)

    return middleware
