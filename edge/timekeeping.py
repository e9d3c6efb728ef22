"""The node's time at work: GPS fixes feed the time source, and trusted time, once it comes, is acted on.

``GpsTimes`` sits between the GPS tracker and its listeners: a fix whose
time the time source refuses (a rollover date, a jump) is passed on
without its time, so the track and the positions use the node's time,
marked untrusted when it is.  ``keep_time`` runs in the background: on the
first trusted time of this process it corrects this boot's untrusted
records and tells HQ (``time_fix``), runs the commands that waited for
trusted time to judge their expiry, and keeps the time floor on disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from devices.gps import Fix
from kit.timesource import Stamp, TimeSource

from .store import Store

log = logging.getLogger(__name__)

FLOOR_EVERY_S = 3600.0  # persist the floor at most hourly: an SD card counts its writes


class GpsTimes:
    def __init__(self, time: TimeSource) -> None:
        self.time = time
        self.accepted: Fix | None = None  # the latest fix whose time was accepted

    def filter(self, fix: Fix) -> Fix:
        """The fix as the node uses it: its time only if the time source accepted it."""
        if fix.time is not None and self.time.observe_gps(fix.time, self.time.monotonic()):
            self.accepted = fix
            return fix
        return dataclasses.replace(fix, time=None)

    def sane(self, fix: Fix) -> Fix:
        """The latest fix as filtered: without its time unless that time was accepted."""
        return fix if fix is self.accepted else dataclasses.replace(fix, time=None)

    def position_time(self, fix: Fix) -> tuple[float, bool, Stamp | None]:
        """(time, trusted, stamp) of a position: GPS time when accepted, else the node's (how sure, and its stamp)."""
        if fix.time is not None:
            return fix.time, True, None
        st = self.time.stamp()
        return st.t, st.trusted, st


async def keep_time(time: TimeSource, store: Store, deferred: Callable[[], Awaitable[int]], interval: float = 5.0) -> None:
    while True:
        fix = time.take_fix()
        if fix is not None:
            n = await store.apply_time_fix(fix)
            log.info("trusted time (%s, offset %+.1f s): %d records of this node corrected, HQ told", fix.source, fix.offset, n)
        if time.trusted:
            ran = await deferred()
            if ran:
                log.info("%d commands that waited for trusted time were judged", ran)
        due = time.floor_due(FLOOR_EVERY_S)
        if due is not None:
            await asyncio.get_running_loop().run_in_executor(None, time.save_floor, due)
        await time.sleep(interval)
