"""GPS through gpsd (gpsd-py3), off the event loop, with a reconnect loop outside.

``GpsdConnection`` is one connection as an async context manager; ``GpsTracker``
keeps one up, polls it, and publishes the latest ``Fix`` and a ``GpsState``
that tells "gpsd down", "no receiver" and "no fix" apart.  gpsd-py3 keeps its
socket in module globals, so one process has one connection, serialised
through a single-thread executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import gpsd  # gpsd-py3

from .errors import GpsUnavailable

log = logging.getLogger(__name__)


class GpsState(str, Enum):
    GPSD_DOWN = "gpsd_down"
    NO_RECEIVER = "no_receiver"
    NO_FIX = "no_fix"
    FIX = "fix"


@dataclass(frozen=True)
class Fix:
    time: float | None  # GPS time, Unix seconds (None if the receiver gave none)
    lat: float
    lon: float
    mode: int  # 2 = 2D, 3 = 3D
    speed: float | None = None  # m/s
    track: float | None = None  # degrees true
    alt: float | None = None
    eph: float | None = None  # horizontal error estimate, metres
    received: float = 0.0  # system clock when we read it


def _parse_time(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(str(value).replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        try:
            return datetime.strptime(str(value).replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            return None


def _float(v: Any) -> float | None:
    try:
        return None if v in (None, "", "n/a") else float(v)
    except (TypeError, ValueError):
        return None


class GpsdConnection:
    def __init__(self, host: str, port: int, executor: ThreadPoolExecutor) -> None:
        self.host, self.port = host, port
        self._ex = executor

    async def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._ex, fn, *args)
        except Exception as exc:  # gpsd-py3 raises bare Exception too; socket errors, bad JSON
            raise GpsUnavailable(f"gpsd at {self.host}:{self.port}: {exc}") from exc

    async def __aenter__(self) -> GpsdConnection:
        await self._call(self._connect)
        return self

    def _connect(self) -> None:
        gpsd.connect(host=self.host, port=self.port)
        sock = gpsd.gpsd_socket
        if sock is not None:
            sock.settimeout(5.0)

    async def __aexit__(self, *exc: object) -> None:
        await self._call(self._close)

    @staticmethod
    def _close() -> None:
        sock = gpsd.gpsd_socket
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        gpsd.gpsd_socket = None

    @staticmethod
    def _poll_once() -> tuple[GpsState, Any]:
        try:
            resp = gpsd.get_current()
        except UserWarning:  # gpsd-py3's way of saying "no active device"
            return GpsState.NO_RECEIVER, None
        except (IndexError, KeyError):  # a device, but no report yet
            return GpsState.NO_FIX, None
        if getattr(resp, "mode", 0) < 2:
            return GpsState.NO_FIX, None
        return GpsState.FIX, resp

    async def poll(self) -> tuple[GpsState, Fix | None]:
        state, resp = await self._call(self._poll_once)
        if resp is None:
            return state, None
        fix = Fix(
            time=_parse_time(getattr(resp, "time", None)),
            lat=float(resp.lat),
            lon=float(resp.lon),
            mode=int(resp.mode),
            speed=_float(getattr(resp, "hspeed", None)),
            track=_float(getattr(resp, "track", None)),
            alt=_float(getattr(resp, "alt", None)) if resp.mode >= 3 else None,
            eph=_float((getattr(resp, "error", None) or {}).get("x")),
            received=time.time(),
        )
        return GpsState.FIX, fix


class GpsTracker:
    """Keeps the latest fix; retries gpsd forever; logs once on loss and once on recovery."""

    def __init__(self, host: str, port: int, interval: float = 1.0, retry: float = 5.0) -> None:
        self.host, self.port = host, port
        self.interval = interval
        self.retry = retry
        self.state = GpsState.GPSD_DOWN
        self.fix: Fix | None = None
        # Subscribers get every new fix (the trip recorder, the position sampler).
        self.listeners: list[Callable[[Fix], None]] = []
        self._ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpsd")

    @property
    def clock_offset(self) -> float | None:
        """GPS time minus system time at the last fix: the node has no RTC."""
        if self.fix is None or self.fix.time is None:
            return None
        return self.fix.time - self.fix.received

    async def run(self) -> None:
        reported_down = False
        try:
            while True:
                try:
                    async with GpsdConnection(self.host, self.port, self._ex) as conn:
                        if reported_down:
                            log.info("gpsd at %s:%d is back", self.host, self.port)
                        reported_down = False
                        while True:
                            state, fix = await conn.poll()
                            if state != self.state:
                                log.info("GPS state: %s", state.value)
                            self.state = state
                            if fix is not None:
                                self.fix = fix
                                for listener in self.listeners:
                                    listener(fix)
                            await asyncio.sleep(self.interval)
                except GpsUnavailable as exc:
                    if not reported_down:
                        log.warning("GPS unavailable (%s); retrying every %.0fs", exc, self.retry)
                        reported_down = True
                    self.state = GpsState.GPSD_DOWN
                await asyncio.sleep(self.retry)
        finally:
            self._ex.shutdown(wait=False, cancel_futures=True)
