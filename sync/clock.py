"""Injected time.  Tests pass a ManualClock and never sleep to wait for time.

The node has no RTC: after a cold boot the system clock may be years off
until NTP or GPS sets it.  ``Clock.now()`` is wall time (seconds, float),
``Clock.monotonic()`` is for timeouts.  The hybrid logical clock orders
events across nodes even when wall clocks disagree.
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


class HLC:
    """Hybrid logical clock packed in 64 bits: 48 bits of milliseconds, 16 of counter."""

    def __init__(self, clock: Clock, last: int = 0) -> None:
        self._clock = clock
        self.last = last

    def _wall_ms(self) -> int:
        return int(self._clock.now() * 1000) & ((1 << 48) - 1)

    def tick(self) -> int:
        wall = self._wall_ms() << 16
        self.last = wall if wall > self.last else self.last + 1
        return self.last

    def observe(self, remote: int) -> int:
        """Merge a timestamp received from the other end, then tick."""
        wall = self._wall_ms() << 16
        self.last = max(wall, self.last + 1, remote + 1)
        return self.last

    @staticmethod
    def millis(value: int) -> int:
        return value >> 16
