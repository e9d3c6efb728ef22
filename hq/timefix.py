"""Trusted time at HQ: a van's records made before it knew the time, corrected when it learns it.

A van stamps each record with whether its time was trusted, its monotonic
time and its boot id (kit/timesource.py).  When trusted time arrives it
sends a ``time_fix`` event (stream ``evt``): at monotonic ``mono`` of boot
``boot`` the true time was ``time``.  Every untrusted record of that boot,
held already or arriving later, then gets ``its mono + (time - mono)``, and
is trusted.  Until then HQ shows its time as unconfirmed.  A position whose
time is impossible (before this software existed: a receiver after a GPS
week-number rollover, from a van that does not filter it) never moves the
fleet's "as of": HQ's arrival time stands in, marked untrusted.
"""

from __future__ import annotations

from typing import Any

from kit.timesource import BUILD_FLOOR
from sync.poscodec import Position, boot32

from .db import DB, migrate

MIGRATIONS = [
    """
CREATE TABLE time_fixes (
    node_id TEXT NOT NULL, boot TEXT NOT NULL, mono_offset DOUBLE PRECISION NOT NULL, time DOUBLE PRECISION NOT NULL, clock_offset DOUBLE PRECISION, received DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, boot)
);
ALTER TABLE records ADD COLUMN time_trusted BIGINT;
ALTER TABLE records ADD COLUMN boot TEXT;
ALTER TABLE records ADD COLUMN mono DOUBLE PRECISION;
ALTER TABLE records ADD COLUMN created_node DOUBLE PRECISION;
ALTER TABLE node_state ADD COLUMN pos_trusted BIGINT
""",
    # 2: where an untrusted position was on its boot's monotonic clock (v3 position items)
    """
ALTER TABLE node_state ADD COLUMN pos_mono DOUBLE PRECISION;
ALTER TABLE node_state ADD COLUMN pos_boot BIGINT
""",
]


async def create_schema(db: DB) -> None:
    await migrate(db, "hq_time", MIGRATIONS)


def plausible(t: float) -> bool:
    """A van's time HQ may show: not before this software was built."""
    return t >= BUILD_FLOOR


async def position_time(db: DB, node_id: str, p: Position, now: float) -> tuple[float, bool]:
    """(time, trusted) the fleet shows for a position: corrected by its boot's fix when it has one, never impossible."""
    if not p.trusted_time and p.mono is not None and p.boot is not None:
        async with db.execute("SELECT boot, mono_offset FROM time_fixes WHERE node_id = ?", (node_id,)) as cur:
            for boot, mono_offset in await cur.fetchall():
                if boot32(str(boot)) == p.boot:
                    return p.mono + float(mono_offset), True
    return (p.time, p.trusted_time) if plausible(p.time) else (now, False)


async def record_clock(db: DB, node_id: str, record_id: str, doc: dict[str, Any]) -> None:
    """An application just stored: keep its clock, and correct it at once if its boot's fix is already here."""
    clock = doc.get("clock")
    if not isinstance(clock, dict) or clock.get("trusted", True):
        return
    boot, mono = str(clock.get("boot", "")), clock.get("mono")
    await db.execute(
        "UPDATE records SET time_trusted = 0, boot = ?, mono = ?, created_node = created WHERE record_id = ?",
        (boot, float(mono) if isinstance(mono, (int, float)) else None, record_id),
    )
    async with db.execute("SELECT mono_offset FROM time_fixes WHERE node_id = ? AND boot = ?", (node_id, boot)) as cur:
        row = await cur.fetchone()
    if row is not None:
        await _correct(db, node_id, boot, float(row[0]))


async def time_fix(db: DB, node_id: str, doc: dict[str, Any], now: float) -> None:
    """A van's ``time_fix`` event: remember it and correct what is held of that boot."""
    boot = str(doc["boot"])
    mono_offset = float(doc["time"]) - float(doc["mono"])
    await db.execute(
        "INSERT INTO time_fixes(node_id, boot, mono_offset, time, clock_offset, received) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (node_id, boot) DO NOTHING",
        (node_id, boot, mono_offset, float(doc["time"]), float(doc.get("offset") or 0.0), now),
    )
    async with db.execute("SELECT mono_offset FROM time_fixes WHERE node_id = ? AND boot = ?", (node_id, boot)) as cur:
        row = await cur.fetchone()
    assert row is not None
    await _correct(db, node_id, boot, float(row[0]))


async def _correct(db: DB, node_id: str, boot: str, mono_offset: float) -> None:
    await db.execute(
        "UPDATE records SET created = mono + ?, time_trusted = 1 WHERE node_id = ? AND boot = ? AND time_trusted = 0 AND mono IS NOT NULL",
        (mono_offset, node_id, boot),
    )
    await db.execute(
        "UPDATE node_state SET pos_time = pos_mono + ?, pos_trusted = 1"
        " WHERE node_id = ? AND pos_trusted = 0 AND pos_boot = ? AND pos_mono IS NOT NULL",
        (mono_offset, node_id, boot32(boot)),
    )
