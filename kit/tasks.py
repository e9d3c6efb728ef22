"""Supervised background loops tied to a block: started on entry, cancelled and awaited on the way out.

Every long-running loop of the node and HQ (ingest, uplink, shredder, SMS
sender, downlink rounds, watchdog, ignition) runs inside one of these in its
cleanup context, so teardown mirrors setup and no task outlives its app.

A loop that raises is not left dead until shutdown (one unexpected error
would otherwise stop syncing until the van is rebooted): its traceback is
logged at once, it is started again after a backoff that doubles up to a
cap, and its record in the app's ``Loops`` registry (state, restarts, last
error) is what the van's ``/api/v1/status`` and HQ's ``/healthz`` show.  A
loop that returns has finished its work (ignition off, no hardware
configured) and is not restarted.  Restarting needs a way to make the work
again, so pass a factory (``uplink.run``, not ``uplink.run()``); a bare
coroutine runs once and is recorded as ``failed`` if it raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .clock import Clock, SystemClock

log = logging.getLogger(__name__)

# Restart backoff: the first restart waits RESTART_MIN, each further one twice as
# long up to RESTART_MAX; a loop that then ran RESTART_MAX without failing starts
# again from RESTART_MIN.  Short enough that a van resumes syncing within a minute,
# long enough that a loop failing at once does not fill the log.
RESTART_MIN = 1.0
RESTART_MAX = 60.0

Work = Callable[[], Awaitable[object]] | Coroutine[Any, Any, object]


@dataclass
class LoopRecord:
    name: str
    state: str = "starting"  # running, restarting (waiting out its backoff), finished, failed, stopped
    restarts: int = 0
    last_error: str | None = None  # the exception's class: the message and traceback are in the log only
    last_error_at: float | None = None  # wall time (the registry's clock)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.restarts, "last_error": self.last_error, "last_error_at": self.last_error_at}


class Loops:
    """The supervised loops of one app, by name."""

    def __init__(self, clock: Clock | None = None, restart_min: float = RESTART_MIN, restart_max: float = RESTART_MAX) -> None:
        self.clock: Clock = clock or SystemClock()
        self.restart_min = restart_min
        self.restart_max = restart_max
        self.records: dict[str, LoopRecord] = {}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: rec.as_dict() for name, rec in sorted(self.records.items())}


# The registry's key in an aiohttp app (the van's and HQ's both create one).
LOOPS = web.AppKey("loops", Loops)


async def _supervise(work: Work, rec: LoopRecord, loops: Loops) -> None:
    delay = loops.restart_min
    while True:
        rec.state = "running"
        started = loops.clock.monotonic()
        try:
            await (work() if callable(work) else work)
        except asyncio.CancelledError:
            rec.state = "stopped"
            raise
        except Exception as exc:
            rec.last_error, rec.last_error_at = type(exc).__name__, loops.clock.now()
            if not callable(work):
                rec.state = "failed"
                log.exception("background loop %s failed and cannot be restarted (started from a coroutine)", rec.name)
                return
            if loops.clock.monotonic() - started >= loops.restart_max:
                delay = loops.restart_min  # it had been healthy for a while: not a crash loop
            rec.state = "restarting"
            rec.restarts += 1
            log.exception("background loop %s crashed (restart %d in %.0fs)", rec.name, rec.restarts, delay)
            await loops.clock.sleep(delay)
            delay = min(loops.restart_max, delay * 2)
            continue
        rec.state = "finished"
        return


@contextlib.asynccontextmanager
async def background(work: Work, name: str, loops: Loops | None = None) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``work`` supervised for the duration of the block; recorded in ``loops`` under ``name``."""
    registry = loops if loops is not None else Loops()
    rec = registry.records[name] = LoopRecord(name)
    task = asyncio.create_task(_supervise(work, rec, registry), name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not callable(work):
            work.close()  # cancelled before it ever ran: no "never awaited" warning
        if rec.state != "failed":
            rec.state = "stopped"
