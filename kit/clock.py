"""Injected time.  Tests pass a ManualClock and never sleep to wait for time.

The node has no RTC: after a cold boot the system clock may be years off
until NTP or GPS sets it.  ``Clock.now()`` is wall time (seconds, float),
``Clock.monotonic()`` is for timeouts.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import time
from typing import Protocol


_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h): the fields up to tai, then padding the kernel reserves
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long), ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long), ("status", ctypes.c_int), ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11),
    ]


_libc: ctypes.CDLL | None = None


def kernel_synchronised() -> bool | None:
    """True when chrony/NTP disciplines the clock (adjtimex, read-only: modes 0); None where it cannot be asked."""
    global _libc
    try:
        if _libc is None:  # loaded once: find_library runs ldconfig
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        tx = _Timex()
        state = _libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def synchronised(self) -> bool | None:
        """Whether chrony/NTP disciplines the kernel's clock (kit.timesource reads adjtimex)."""
        return kernel_synchronised()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that only moves when the test says so."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self._now = start
        self.synced: bool = True  # the test's time is true time unless a test says the clock is unsynchronised
        self._mono = 0.0
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    def synchronised(self) -> bool:
        return self.synced

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
