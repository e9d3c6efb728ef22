"""Shared web plumbing: the one error handler and its one JSON shape.

Every error that reaches HTTP is an ``HttpProblem`` (or becomes one) and is
rendered here, for API clients as::

    {"error": {"code": "validation_failed", "message": "...", "fields": {...}}}

and for people as a short Ukrainian page.  No traceback ever reaches a user:
unexpected exceptions are logged with an incident id and shown as 500.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # not "no-referrer": with it browsers send "Origin: null" on form posts
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
}


_dumps = functools.partial(json.dumps, ensure_ascii=False)


def json_response(data: Any, status: int = 200) -> web.Response:
    """JSON with Ukrainian text readable as is (UTF-8, not \\u escapes)."""
    return web.json_response(data, status=status, dumps=_dumps)


class SafeAccessLogger(AbstractAccessLogger):
    """Access log without query strings: a URL must never carry personal data into a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.1fms", request.remote, request.method, request.path, response.status, time * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class HttpProblem(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.fields = fields or {}


def problem_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


@dataclass(frozen=True)
class PageText:
    """An error page's words in the reader's language."""

    lang: str = "uk"
    title: str = "Помилка"
    message: str = ""
    code: str = "Код"
    home: str = "На головну"


# An app whose pages speak more than Ukrainian sets this: (request, message as raised) -> PageText.  JSON answers keep the message.
ERROR_PAGE_TEXT: web.AppKey[Callable[[web.Request, str], PageText]] = web.AppKey("error_page_text")


def render_problem(request: web.Request, status: int, code: str, message: str, fields: dict[str, Any] | None = None) -> web.Response:
    if wants_json(request):
        return json_response(problem_body(code, message, fields), status=status)
    localise = request.config_dict.get(ERROR_PAGE_TEXT)
    text = localise(request, message) if localise is not None else PageText(message=message)
    page = (
        f"<!doctype html><html lang='{html.escape(text.lang)}'><head><meta charset='utf-8'><title>{html.escape(text.title)}</title>"
        "<link rel='stylesheet' href='/static/app.css'></head><body><main class='error-page'>"
        f"<h1>{html.escape(text.message)}</h1><p>{html.escape(text.code)}: {html.escape(code)} ({status})</p>"
        f"<p><a href='/'>{html.escape(text.home)}</a></p></main></body></html>"
    )
    return web.Response(text=page, status=status, content_type="text/html")


_STATUS_MESSAGES = {
    404: ("not_found", "Сторінку не знайдено"),
    405: ("method_not_allowed", "Цей метод не підтримується"),
    413: ("too_large", "Запит завеликий"),
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except HttpProblem as exc:
        response = render_problem(request, exc.status, exc.code, exc.message, exc.fields)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _STATUS_MESSAGES.get(exc.status, ("http_error", exc.reason))
        response = render_problem(request, exc.status, code, message)
    except Exception:
        incident = secrets.token_hex(4)
        log.exception("unhandled error, incident %s, %s %s", incident, request.method, request.path)
        response = render_problem(request, 500, "internal_error", f"Внутрішня помилка. Номер інциденту: {incident}")
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    if not request.path.startswith("/static/"):
        # Pages and API answers may hold personal data: never kept in a browser's or proxy's cache.
        response.headers.setdefault("Cache-Control", "no-store")
    return response
