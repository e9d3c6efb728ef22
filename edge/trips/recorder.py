"""Recording the van's track into the node's database, small enough for a year of trips.

Fixes are buffered in memory and flushed every ``flush_every`` seconds
through the track pipeline (clean, smooth, thin); only the kept points are
stored, as integers (1e-7 degrees, cm/s).  A year of 1 Hz driving keeps a few
per cent of its fixes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiosqlite

from devices.gps import Fix
from sync.clock import Clock
from sync.db import transaction
from sync.migrate import migrate

from .track import Point, track

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE track_points (t REAL PRIMARY KEY, lat_e7 INTEGER NOT NULL, lon_e7 INTEGER NOT NULL, speed_cms INTEGER) WITHOUT ROWID;
    """,
]


async def create_schema(db: aiosqlite.Connection) -> None:
    await migrate(db, "trips", MIGRATIONS)


class TrackRecorder:
    def __init__(self, db: aiosqlite.Connection, clock: Clock, flush_every: float = 30.0) -> None:
        self.db = db
        self.clock = clock
        self.flush_every = flush_every
        self._buffer: list[Point] = []
        self._last: Point | None = None
        self.stored = 0
        # Called with each flush's kept points, in GPS-time order (the trip lifecycle's GPS input).
        self.listeners: list[Callable[[list[Point]], Awaitable[None]]] = []

    def on_fix(self, fix: Fix) -> None:
        """GPS listener: GPS time wins over the system clock (no RTC after a cold boot)."""
        t = fix.time if fix.time is not None else self.clock.now()
        self._buffer.append(Point(t, fix.lat, fix.lon, fix.speed, fix.mode))

    async def flush(self) -> int:
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, []
        anchor = [self._last] if self._last is not None else []
        kept = [p for p in track(anchor + batch) if self._last is None or p.t > self._last.t]
        if not kept:
            return 0
        async with transaction(self.db):
            await self.db.executemany(
                "INSERT OR IGNORE INTO track_points(t, lat_e7, lon_e7, speed_cms) VALUES (?, ?, ?, ?)",
                [(p.t, round(p.lat * 1e7), round(p.lon * 1e7), None if p.speed is None else round(p.speed * 100)) for p in kept],
            )
        self._last = kept[-1]
        self.stored += len(kept)
        for listener in self.listeners:
            try:
                await listener(kept)
            except Exception:  # the track is stored; a listener's failure must not stop recording
                log.exception("track listener failed")
        return len(kept)

    async def run(self) -> None:
        try:
            while True:
                await self.clock.sleep(self.flush_every)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())  # what was buffered when the ignition went off


async def points(db: aiosqlite.Connection, start: float, end: float) -> list[Point]:
    async with db.execute(
        "SELECT t, lat_e7, lon_e7, speed_cms FROM track_points WHERE t >= ? AND t < ? ORDER BY t", (start, end)
    ) as cur:
        return [Point(r[0], r[1] / 1e7, r[2] / 1e7, None if r[3] is None else r[3] / 100) async for r in cur]
