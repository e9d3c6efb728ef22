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

from . import users
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


async def page(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    ctx.setdefault("session", request.app[SESSIONS].get(request))
    ctx.setdefault("csrf_token", csrf_token(request))  # the session's, or before login the pre-session token (kit/hardening.py)
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
