"""Login throttling: failed logins counted per username and per client address.

A key (``user:<name>`` or ``addr:<ip>``) that reaches its failure limit is
locked for ``lockout`` seconds, doubled at each further lockout up to
``max_lockout``.  While locked, logins are refused *before* the password is
checked, so a guesser learns nothing and the scrypt work is not spent.
Failures older than ``window`` seconds are forgotten.  A successful login
clears its username's failure count, not its address's (otherwise an attacker with
one valid account could reset the address counter between guesses).

Time comes from the injected clock (``monotonic`` for durations), so tests
move time instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import settings
from .clock import Clock

MAX_KEYS = 10_000  # bounds memory if someone sprays random usernames


@dataclass
class _Entry:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0
    lockouts: int = 0


_D = settings.NODE.defaults()


@dataclass(frozen=True)
class ThrottleSettings:
    # Defaults live in the settings registry (kit/settings.py) only.
    max_per_user: int = _D["login_max_failures"]
    max_per_address: int = _D["login_max_failures_per_address"]
    lockout: float = _D["login_lockout"]
    max_lockout: float = _D["login_max_lockout"]
    window: float = _D["login_window"]

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> ThrottleSettings:
        """From resolved settings (``settings.NODE.resolve``)."""
        return cls(values["login_max_failures"], values["login_max_failures_per_address"], values["login_lockout"],
                   values["login_max_lockout"], values["login_window"])


class LoginThrottle:
    def __init__(self, clock: Clock, settings: ThrottleSettings | None = None) -> None:
        self.clock = clock
        self.settings = settings or ThrottleSettings()
        self._entries: dict[str, _Entry] = {}

    @staticmethod
    def _keys(username: str, address: str) -> tuple[str, str]:
        return "user:" + username.strip().casefold(), "addr:" + address

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until a login may be tried again for this username and address (0: now)."""
        now = self.clock.monotonic()
        wait = 0.0
        for key in self._keys(username, address):
            e = self._entries.get(key)
            if e is not None and e.locked_until > now:
                wait = max(wait, e.locked_until - now)
        return wait

    def failed(self, username: str, address: str) -> float:
        """Count a failure; returns the lockout it started (0 if none)."""
        now = self.clock.monotonic()
        if len(self._entries) >= MAX_KEYS:
            self._prune(now)
        user_key, addr_key = self._keys(username, address)
        started = 0.0
        for key, limit in ((user_key, self.settings.max_per_user), (addr_key, self.settings.max_per_address)):
            e = self._entries.setdefault(key, _Entry())
            if now - e.last_failure > self.settings.window:
                e.failures = 0
                if now - e.locked_until > self.settings.max_lockout:
                    e.lockouts = 0  # a long quiet spell forgives earlier lockouts
            e.failures += 1
            e.last_failure = now
            if e.failures >= limit:
                duration = min(self.settings.lockout * 2 ** e.lockouts, self.settings.max_lockout)
                e.locked_until = now + duration
                e.lockouts += 1
                e.failures = 0
                started = max(started, duration)
        return started

    def succeeded(self, username: str, address: str) -> None:
        # Failures are forgiven; earlier lockouts still count for the next one's length until a quiet spell.
        e = self._entries.get(self._keys(username, address)[0])
        if e is not None:
            e.failures = 0

    def _prune(self, now: float) -> None:
        stale = [k for k, e in self._entries.items() if e.locked_until <= now and now - e.last_failure > self.settings.window]
        for k in stale:
            del self._entries[k]
        if len(self._entries) >= MAX_KEYS:
            # Still full of live entries: forget the oldest unlocked ones rather than grow without bound.
            unlocked = sorted((e.last_failure, k) for k, e in self._entries.items() if e.locked_until <= now)
            for _, k in unlocked[: len(unlocked) // 2 + 1]:
                del self._entries[k]
