"""What every HQ page shares: the session it requires (with a permission) and the template context."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web

from kit.hardening import csrf_token
from kit.sessions import Session
from kit.web import SECURITY_HEADERS, HttpProblem

from kit import i18n as lang_mech

from . import i18n, users
from .appkeys import SESSIONS, TOKEN_SESSION


def when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(float(ts), timezone.utc).astimezone().strftime("%d.%m.%Y %H:%M:%S")


def session(request: web.Request, permission: str | None = None) -> Session:
    s = request.get(TOKEN_SESSION) or request.app[SESSIONS].get(request)  # a machine token (hq/auth.py) or a login
    if s is None:
        raise web.HTTPSeeOther("/login")
    if permission is not None and not users.allowed(s.role, permission):
        raise HttpProblem("Ваша роль не дає доступу до цієї дії", code="forbidden", status=403)
    return s


def language(request: web.Request) -> str:
    # A citizen's public page can be linked in a language (?lang=en) without a cookie.
    asked = request.query.get("lang", "")
    if request.path.startswith("/public/") and asked in lang_mech.LANGUAGES:
        return asked
    return lang_mech.language(request.cookies)


def tr(request: web.Request, key: str, **values: object) -> str:
    """A catalogue string in the request's language, with {placeholders} filled."""
    text = i18n.translate(key, language(request))
    return text.format(**values) if values else text


async def opening_reason(request: web.Request, s: Session) -> str:
    """The form that opens personal data (a record, an attachment, an export): its csrf checked, the stated reason (required, audited)."""
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    reason = str(form.get("reason", "")).strip()
    if len(reason) < 3:
        raise HttpProblem(tr(request, "error.reason_required"), code="reason_required", status=422,
                          fields={"reason": tr(request, "error.required")})
    return reason[:200]


async def i18n_context(request: web.Request) -> dict[str, Any]:
    """Jinja context processor: every HQ page (whoever renders it) gets the translator, its language and its path."""
    lang = language(request)
    # The language switch comes back here; a page answering a form (POST) goes back to the page the form was on.
    path = request.path_qs if request.method == "GET" else lang_mech.local_path(urlsplit(request.headers.get("Referer", "/")).path or "/")
    if request.path.startswith("/public/"):
        path = request.path  # a link's ?lang= would otherwise win over the switch
    return {"t": i18n.translator(lang), "lang": lang, "path": path, "ordered": i18n.ordered}


async def page(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    ctx.setdefault("session", request.app[SESSIONS].get(request))
    ctx.setdefault("csrf_token", csrf_token(request))  # the session's, or before login the pre-session token (kit/hardening.py)
    for k, v in (await i18n_context(request)).items():  # a page drawn by a middleware (a throttled login) misses the processor
        ctx.setdefault(k, v)
    ctx["when"] = when
    ctx["can"] = lambda perm: ctx["session"] is not None and users.allowed(ctx["session"].role, perm)
    return aiohttp_jinja2.render_template(template, request, ctx, status=status)


def tile_origin(url: str) -> str:
    """CSP source of a tile URL template: its scheme and host ({s} subdomains as a wildcard)."""
    if url.startswith("/"):
        return "'self'"
    parts = urlsplit(url.replace("{s}", "SUBDOMAIN"))
    return f"{parts.scheme}://{parts.netloc.replace('SUBDOMAIN', '*')}"


def allow_tiles(resp: web.StreamResponse, tiles: str) -> None:
    """The pages with a map load images from elsewhere: the configured tile server, nothing more."""
    resp.headers["Content-Security-Policy"] = SECURITY_HEADERS["Content-Security-Policy"].replace(
        "img-src 'self' data:", f"img-src 'self' data: {tile_origin(tiles)}")
