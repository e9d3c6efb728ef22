"""Administrator sessions of the van UI (the shared implementation is kit/sessions.py)."""

from __future__ import annotations

from aiohttp import web

from kit.sessions import Session, Sessions

COOKIE = "mo_session"

__all__ = ["COOKIE", "Session", "Sessions", "set_cookie"]


def set_cookie(response: web.StreamResponse, session: Session, secure: bool) -> None:
    response.set_cookie(COOKIE, session.token, httponly=True, samesite="Strict", secure=secure, path="/")
