"""Background tasks tied to a block: started on entry, cancelled and awaited on the way out.

Every long-running loop of the node and HQ (ingest, uplink, shredder, SMS
sender, downlink rounds, watchdog, ignition) runs inside one of these in its
cleanup context, so teardown mirrors setup and no task outlives its app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, object], name: str) -> AsyncIterator[asyncio.Task[object]]:
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
