"""Injected time.  Tests pass a ManualClock and never sleep to wait for time.

The node has no RTC: after a cold boot the system clock may be years off
until NTP or GPS sets it.  ``Clock.now()`` is wall time (seconds, float),
``Clock.monotonic()`` is for timeouts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that only moves when the test says so."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds
        still = []
        for due, fut in self._waiters:
            if due <= self._mono:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((due, fut))
        self._waiters = still

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._mono + seconds, fut))
        await fut
