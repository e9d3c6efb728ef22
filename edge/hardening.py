"""Web hardening of the van UI: the shared middlewares of kit/hardening.py with the van's pieces.

What the van adds to the floor's CSRF, login throttling, session fixation
and cookie flags: its two login routes, the upload routes whose handlers
stream multipart bodies (and check the form's token themselves;
tests/security posts multipart forms without a token to every route), the
login page drawn in the administrator's language when a login is
throttled, and a key rotation kept while the store was locked applied at
the next login.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from kit import hardening as kit_hardening
from kit.hardening import CSRF_FIELD, CSRF_HEADER, GUARD, MIDDLEWARES, PRE_COOKIE, Guard, csrf_context, csrf_token
from kit.ratelimit import LoginThrottle

from . import i18n, rotation
from .appkeys import CONFIG, SESSIONS
from .status import node_status

log = logging.getLogger(__name__)

__all__ = ["CSRF_FIELD", "CSRF_HEADER", "GUARD", "LOGIN_PATHS", "MIDDLEWARES", "PRE_COOKIE", "STREAMED_UPLOADS", "THROTTLE", "csrf_context",
           "csrf_token", "guard", "throttled_message"]

LOGIN_PATHS = frozenset({"/login", "/api/v1/login"})
THROTTLE = web.AppKey("login_throttle", LoginThrottle)  # the guard's throttle, also counting wrong old passwords (edge/passwords.py)
# Routes whose handlers stream multipart uploads (the intake form carries photos too) and check the form's token after reading it.
STREAMED_UPLOADS = frozenset({"/applications", "/applications/{id}/attachments", "/applications/{id}/signature"})


def _lang(request: web.Request) -> str:
    lang = request.cookies.get(i18n.COOKIE, i18n.DEFAULT)
    return lang if lang in i18n.LANGUAGES else i18n.DEFAULT


def throttled_message(request: web.Request, wait: float) -> str:
    at = datetime.fromtimestamp(request.app[CONFIG].clock.now() + wait).strftime("%H:%M")
    minutes = max(1, int(-(-wait // 60)))
    return i18n.translate("login.throttled", _lang(request)).format(time=at, minutes=minutes)


async def _refusal_page(request: web.Request, username: str, message: str) -> web.StreamResponse:
    # Refused before the router's handler and aiohttp_jinja2's context middleware: the page context is built here.
    lang = _lang(request)
    ctx: dict[str, Any] = {"error": message, "username": username, "expired": False, "status": await node_status(request.app),
                           "session": request.app[SESSIONS].get(request), "t": i18n.translator(lang), "lang": lang,
                           "csrf_token": kit_hardening.csrf_token(request), "request": request}
    return aiohttp_jinja2.render_template("login.html", request, ctx, status=429)


async def _after_login(request: web.Request) -> None:
    # a key rotation received while the store was locked opens now
    try:
        await rotation.apply_pending(request.app)
    except Exception:  # the login itself must not fail; the rotation stays pending
        log.exception("pending key rotation could not be applied")


def guard(app: web.Application, throttle: LoginThrottle) -> Guard:
    """The van's guard, for ``app[GUARD]``."""
    return Guard(app[SESSIONS], throttle, LOGIN_PATHS, streamed_uploads=STREAMED_UPLOADS, throttled_message=throttled_message,
                 refusal_page=_refusal_page, after_login=_after_login)
