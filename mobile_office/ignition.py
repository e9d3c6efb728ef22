"""Ignition off: flush, a last bounded sync, a clean exit, and (optionally) power off.

The van's computer runs from the ignition line through a small UPS/supercap
that keeps it up for some seconds after the key turns.  The ignition state
is read from a GPIO value file (``--ignition-gpio``, e.g. the sysfs
``/sys/class/gpio/gpioN/value`` or any file a udev/gpiomon helper keeps
current); SIGPWR (sent by UPS daemons) means the same.  Then the node:

1. kicks the uplink and waits up to ``--shutdown-sync-seconds`` for HQ to
   acknowledge what is pending (nothing is lost if it cannot: the outbox is
   on disk and drains at the next start);
2. stops the web server and every background task (cleanup contexts); the
   uplink, on its way out, publishes the retained "offline" status and
   disconnects with the will (sync/mqtt.py), so HQ shows the van offline
   within seconds instead of "online" forever (a clean DISCONNECT suppresses
   the last will);
3. checkpoints SQLite's WAL into the database file (TRUNCATE), so the
   card holds one consistent file when power goes;
4. runs ``--poweroff-command`` (e.g. ``systemctl poweroff``) if set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from kit.tasks import Loops, background
from edge.appkeys import CONFIG, STORE, UPLINK

from kit import settings
from kit.settings import ConfigError

log = logging.getLogger(__name__)
_D = settings.NODE.defaults()


@dataclass(frozen=True)
class PowerSettings:
    # Defaults: the settings registry (kit/settings.py).
    ignition_gpio: Path | None = _D["ignition_gpio"]
    ignition_off_value: str = _D["ignition_off_value"]
    ignition_poll: float = _D["ignition_poll"]
    shutdown_sync_seconds: float = _D["shutdown_sync_seconds"]
    poweroff_command: str | None = _D["poweroff_command"]

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> PowerSettings:
        return cls(values["ignition_gpio"], values["ignition_off_value"], values["ignition_poll"], values["shutdown_sync_seconds"],
                   values["poweroff_command"])

    def check(self) -> None:
        """Fail fast, in one line, on an ignition input that cannot be read."""
        if self.ignition_gpio is not None:
            try:
                self.ignition_gpio.read_text()
            except OSError as exc:
                raise ConfigError(f"--ignition-gpio: cannot read {self.ignition_gpio} ({exc.strerror})") from exc


def _is_off(path: Path, off_value: str) -> bool:
    try:
        return path.read_text().strip() == off_value
    except OSError:
        return False  # a glitch on the line is not a shutdown


@contextlib.asynccontextmanager
async def watch(settings: PowerSettings, off: asyncio.Event, loops: Loops | None = None) -> AsyncIterator[None]:
    """Poll the ignition input (in an executor: it is a file read) and set ``off`` when it drops."""
    if settings.ignition_gpio is None:
        yield
        return
    path = settings.ignition_gpio
    loop = asyncio.get_running_loop()

    async def poll() -> None:
        while not off.is_set():
            if await loop.run_in_executor(None, _is_off, path, settings.ignition_off_value):
                log.warning("ignition off (%s)", path)
                off.set()
                return
            await asyncio.sleep(settings.ignition_poll)  # real time: the key turns in real time

    async with background(poll, "ignition", loops):
        yield


async def final_sync(app: web.Application, seconds: float) -> int:
    """Try to deliver what is pending for at most ``seconds`` (injected clock).

    Returns how many outbox items still wait (they stay on disk and go at the next start).
    """
    cfg, store = app[CONFIG], app[STORE]
    deadline = cfg.clock.monotonic() + seconds
    if UPLINK in app:
        app[UPLINK].kick()
    while True:
        pending = int(str((await store.outbox_summary())["pending"]))
        if pending == 0 or cfg.clock.monotonic() >= deadline:
            break
        await cfg.clock.sleep(0.2)
    log.warning("ignition off: %d item(s) still waiting for HQ (kept on disk, sent at the next start)", pending)
    return pending


def checkpoint(db_path: Path) -> None:
    """Fold the WAL into the database file; run after every other connection is closed (so nothing blocks it)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db_path, timeout=5)) as db:
        busy, log_frames, done = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    log.warning("ignition off: store flushed (%s of %s WAL frames checkpointed%s)", done, log_frames, ", busy" if busy else "")


def power_off(command: str | None) -> None:
    if not command:
        return
    log.warning("ignition off: running %s", command)
    r = subprocess.run(shlex.split(command), check=False)
    if r.returncode != 0:
        log.error("poweroff command exited with %d", r.returncode)
