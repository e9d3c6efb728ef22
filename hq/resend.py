"""The one loop behind every "sent until the van confirms" downlink (status edits, pre-registrations, home visits).

Each round folds what the vans answered, then sends again what is still
unconfirmed after ``status_resend_after``; a round that fails is logged with
its traceback and the next one comes ``ack_poll_interval`` later (the loop
itself is supervised: kit.tasks).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from kit.tasks import LOOPS, background

from .appkeys import CONFIG

log = logging.getLogger(__name__)

Round = Callable[[web.Application, float], Awaitable[object]]


async def send_due(app: web.Application, due: list[str], send: Callable[[web.Application, str], Awaitable[bool]]) -> int:
    """Send each due item in order until the broker is gone (``send`` answers False): the rest wait for the next round."""
    sent = 0
    for item_id in due:
        if not await send(app, item_id):
            break
        sent += 1
    return sent


@contextlib.asynccontextmanager
async def resend_rounds(app: web.Application, name: str, what: str, round_: Round) -> AsyncIterator[None]:
    """Run ``round_(app, resend_after)`` for the app's lifetime, as the supervised loop ``name``."""
    cfg = app[CONFIG]

    async def loop() -> None:
        while True:
            try:
                await round_(app, cfg.status_resend_after)
            except Exception:  # one bad round must not stop the deliveries; logged with its traceback
                log.exception("%s downlink round failed", what)
            await cfg.clock.sleep(cfg.ack_poll_interval)

    async with background(loop, name, app[LOOPS]):
        yield
