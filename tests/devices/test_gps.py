"""GPS through real gpsd, fed by the NMEA simulator through a pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from devices.gps import GpsState, GpsTracker
from firmware_sim.gps_pty import NmeaPty, gpsd_binary, real_gpsd
from firmware_sim.route import Route
from tests.conftest import free_port

pytestmark = pytest.mark.functional


async def until(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll with a deadline; the deadline only bounds a hang."""
    for _ in range(int(timeout / 0.1)):
        if pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


@pytest.fixture
async def feed() -> AsyncIterator[NmeaPty]:
    if gpsd_binary() is None:
        pytest.skip("gpsd is not installed (the test command installs it as root: apt-get install gpsd)")
    async with NmeaPty(Route.from_trip("TRIP-NORTH"), speedup=30, period=0.2) as f:
        yield f


@contextlib.asynccontextmanager
async def tracking(port: int) -> AsyncIterator[GpsTracker]:
    tracker = GpsTracker("127.0.0.1", port, interval=0.2, retry=0.3)
    task = asyncio.create_task(tracker.run())
    try:
        yield tracker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_fix_then_loss_then_fix_again(feed: NmeaPty) -> None:
    port = free_port()
    async with real_gpsd(feed.device, port), tracking(port) as tracker:
        await until(lambda: tracker.state == GpsState.FIX and tracker.fix is not None)
        assert tracker.fix is not None
        assert abs(tracker.fix.lat - 47.91) < 0.2 and abs(tracker.fix.lon - 33.39) < 0.2  # Kryvyi Rih
        assert tracker.fix.time is not None and tracker.clock_offset is not None and abs(tracker.clock_offset) < 5
        feed.fix_enabled = False  # a tunnel
        await until(lambda: tracker.state == GpsState.NO_FIX)
        feed.fix_enabled = True
        await until(lambda: tracker.state == GpsState.FIX)


async def test_gpsd_restart_is_survived(feed: NmeaPty) -> None:
    port = free_port()
    seen: list[float] = []
    async with tracking(port) as tracker:
        tracker.listeners.append(lambda fix: seen.append(fix.lat))
        await asyncio.sleep(0.5)
        assert tracker.state == GpsState.GPSD_DOWN  # no gpsd yet: unavailable, retried
        async with real_gpsd(feed.device, port):
            await until(lambda: tracker.state == GpsState.FIX)
        await until(lambda: tracker.state == GpsState.GPSD_DOWN)
        before = len(seen)
        async with real_gpsd(feed.device, port):
            await until(lambda: tracker.state == GpsState.FIX and len(seen) > before)
    assert seen


async def test_gpsd_without_receiver(feed: NmeaPty) -> None:
    port = free_port()
    async with real_gpsd(None, port), tracking(port) as tracker:
        await until(lambda: tracker.state == GpsState.NO_RECEIVER, 10)
        assert tracker.fix is None
