"""systemd's notify protocol without a dependency: datagrams to $NOTIFY_SOCKET.

``READY=1`` once the node serves, ``WATCHDOG=1`` every half watchdog period
while the event loop runs (a hung loop stops the pings and systemd restarts
the service), ``STOPPING=1`` on the way out.  Outside systemd (no
NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping
from kit.tasks import Loops, background

log = logging.getLogger(__name__)


def _address(env: Mapping[str, str]) -> str | None:
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return None
    return "\0" + addr[1:] if addr.startswith("@") else addr  # '@' marks Linux's abstract namespace


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one state line; False when not under systemd or the socket is gone (never raises)."""
    addr = _address(os.environ if env is None else env)
    if addr is None:
        return False
    try:
        # Non-blocking: a stalled reader must never freeze the event loop (the loop is what the watchdog vouches for).
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as s:
            s.sendto(state.encode(), addr)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        log.warning("sd_notify %s failed: %s", state.split("=")[0], exc.strerror)
        return False


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when the watchdog is off or meant for another process."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.05)
    except ValueError:
        return None


@contextlib.asynccontextmanager
async def watchdog(loops: Loops | None = None) -> AsyncIterator[None]:
    """Ping the watchdog from the event loop for as long as the block runs."""
    interval = watchdog_interval()
    if interval is None or _address(os.environ) is None:
        yield
        return

    async def ping() -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)  # real time on purpose: systemd measures real time

    async with background(ping, "sd-watchdog", loops):
        yield
