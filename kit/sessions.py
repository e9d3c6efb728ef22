"""Server-side login sessions shared by the van UI and the HQ dashboard.

A session is a random token in an HttpOnly, SameSite=Strict cookie, with
its own CSRF token, an idle timeout and (optionally) an absolute lifetime on
the injected clock.  All sessions of one username can be ended at once (an
account removed, a password changed).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from aiohttp import web

from .clock import Clock

from .web import HttpProblem


def _equal(a: str, b: str) -> bool:
    # bytes: compare_digest refuses non-ASCII str, and a forged token may be anything
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class Session:
    token: str
    username: str
    role: str
    csrf: str
    last_seen: float
    data: dict[str, object] = field(default_factory=dict)
    created: float = 0.0


class Sessions:
    def __init__(self, clock: Clock, idle_timeout: float, cookie: str = "mo_session", max_age: float | None = None) -> None:
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_age = max_age  # absolute lifetime, however active the session is; None: idle timeout only
        self.cookie = cookie
        self._by_token: dict[str, Session] = {}

    def create(self, username: str, role: str) -> Session:
        now = self.clock.monotonic()
        s = Session(secrets.token_urlsafe(32), username, role, secrets.token_urlsafe(24), now, created=now)
        self._by_token[s.token] = s
        return s

    def _expired(self, s: Session, now: float) -> bool:
        return now - s.last_seen > self.idle_timeout or (self.max_age is not None and now - s.created > self.max_age)

    def get(self, request: web.Request) -> Session | None:
        token = request.cookies.get(self.cookie)
        if not token:
            return None
        s = self._by_token.get(token)
        if s is None:
            return None
        now = self.clock.monotonic()
        if self._expired(s, now):
            del self._by_token[token]
            return None
        s.last_seen = now
        return s

    def drop(self, session: Session) -> None:
        self._by_token.pop(session.token, None)

    def drop_all(self) -> None:
        self._by_token.clear()

    def drop_user(self, username: str) -> int:
        """End every session of ``username`` (their next request answers 401); returns how many."""
        gone = [t for t, s in self._by_token.items() if s.username == username]
        for t in gone:
            del self._by_token[t]
        return len(gone)

    def purge(self) -> int:
        """Forget expired sessions (they are otherwise noticed only on their next request); returns how many remain."""
        now = self.clock.monotonic()
        for t in [t for t, s in self._by_token.items() if self._expired(s, now)]:
            del self._by_token[t]
        return len(self._by_token)

    @property
    def active(self) -> int:
        return len(self._by_token)

    def require(self, request: web.Request) -> Session:
        s = self.get(request)
        if s is None:
            raise HttpProblem("Увійдіть, щоб продовжити", code="login_required", status=401)
        return s

    @staticmethod
    def check_csrf(session: Session, token: str | None) -> None:
        if not token or not _equal(token, session.csrf):
            raise HttpProblem("Форма застаріла або надіслана не з цієї сторінки. Оновіть сторінку й спробуйте ще раз.",
                              code="csrf_failed", status=403)

    def set_cookie(self, response: web.StreamResponse, session: Session, secure: bool) -> None:
        response.set_cookie(self.cookie, session.token, httponly=True, samesite="Strict", secure=secure, path="/")
