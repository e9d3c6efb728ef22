"""Trusted time on a node without a real-time clock: "now, and how sure".

A Raspberry Pi boots with a stale clock.  chrony (fed by gpsd, see
deploy/chrony.conf) sets the system clock once it has a source and clears
the kernel's ``STA_UNSYNC`` flag, which ``adjtimex`` reads without chronyc.
The node also reads GPS time itself, so it has trusted time even where
chrony is not running or has not stepped yet.

``TimeSource`` is a ``Clock`` (``now()`` is the best time known) and adds
``stamp()``: the time, whether it is trusted, the monotonic time and the
boot id, which every record the node makes carries so that HQ can correct
it when trusted time arrives later in the same boot (``TimeFix``).

Sources, best first:

* ``disciplined``: the kernel says synchronised (chrony/NTP), or GPS time
  agrees with the system clock;
* ``gps``: GPS time disagrees with the system clock: system clock + offset,
  anchored to the monotonic clock so a later step of the system clock does
  not move it;
* ``unsynced``: the system clock, untrusted.

GPS time is never trusted below a floor (the latest trusted time seen,
kept durably in the data directory, and this build's date): a receiver
after a week-number rollover reports dates 1024 weeks (19.6 years) in the
past.  Nor after a jump its own monotonic clock contradicts.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .clock import Clock, kernel_synchronised
from .files import write_atomic

__all__ = ["BUILD_FLOOR", "Stamp", "TimeFix", "TimeSource", "boot_id", "corrected", "kernel_synchronised"]

log = logging.getLogger(__name__)

# This code cannot run before it was written: no trusted time is earlier (2026-01-01T00:00:00Z).
BUILD_FLOOR = 1_767_225_600.0
WEEK_ROLLOVER_S = 1024 * 7 * 86400.0

DISCIPLINED, GPS, UNSYNCED = "disciplined", "gps", "unsynced"

def boot_id() -> str:
    """The kernel's id of this boot: monotonic times compare only within one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return uuid.uuid4().hex  # no /proc: at least unique to this process


@dataclass(frozen=True)
class Stamp:
    """A record's time: what it says, whether it was trusted, and where it was on the monotonic clock of which boot."""

    t: float
    trusted: bool
    mono: float
    boot: str

    def wire(self) -> dict[str, Any]:
        return {"trusted": self.trusted, "mono": round(self.mono, 3), "boot": self.boot}


@dataclass(frozen=True)
class TimeFix:
    """At monotonic ``mono`` of ``boot`` the true time was ``time``: every earlier record of the boot can be corrected."""

    boot: str
    mono: float
    time: float
    offset: float  # true time minus the system clock then
    source: str

    def wire(self) -> dict[str, Any]:
        return {"type": "time_fix", "boot": self.boot, "mono": round(self.mono, 3), "time": self.time,
                "offset": round(self.offset, 3), "source": self.source}


def corrected(clock_doc: Any, t: float, fixes: dict[str, float]) -> tuple[float, bool]:
    """(time, trusted) of a record stamped ``t`` with ``clock_doc``, given ``fixes`` (boot -> true time minus monotonic)."""
    if not isinstance(clock_doc, dict) or clock_doc.get("trusted", True):
        return t, not isinstance(clock_doc, dict) or bool(clock_doc.get("trusted", True))
    mono_offset = fixes.get(str(clock_doc.get("boot")))
    if mono_offset is None or not isinstance(clock_doc.get("mono"), (int, float)):
        return t, False
    return float(clock_doc["mono"]) + mono_offset, True


class TimeSource:
    """The node's clock: ``now()`` is the best time, ``stamp()`` says how sure (see the module's doc)."""

    def __init__(self, clock: Clock, floor_file: Path | None = None, *, trust_kernel: bool = True, assume_synchronised: bool = False,
                 agree_s: float = 2.0, jump_s: float = 5.0, boot: str | None = None) -> None:
        self.clock = clock
        self.floor_file = floor_file
        self.trust_kernel = trust_kernel
        self.assume_synchronised = assume_synchronised
        self.agree_s = agree_s  # GPS and system clock this close: the system clock is right
        self.jump_s = jump_s  # GPS time may differ this much from what the monotonic clock predicts
        self.boot = boot or boot_id()
        self.floor = max(BUILD_FLOOR, self._read_floor())
        self._saved_floor = self.floor
        self._anchor: tuple[float, float] | None = None  # (GPS time, monotonic) of the last accepted fix
        self.rejected: str | None = None  # why the last GPS time was refused ("impossible_date", "jump")
        self._warned: set[str] = set()
        self._fixed = False  # a TimeFix was handed out in this process

    # -- Clock ------------------------------------------------------------------
    def now(self) -> float:
        return self.stamp().t

    def monotonic(self) -> float:
        return self.clock.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep(seconds)

    # -- how sure -----------------------------------------------------------------
    def _kernel(self) -> bool:
        if not self.trust_kernel:
            return False
        if self.assume_synchronised:
            return True
        ask = getattr(self.clock, "synchronised", None)  # one adjtimex call, ~3 us: not worth a cache
        return bool(ask()) if callable(ask) else False

    def assess(self) -> tuple[str, Stamp, float | None]:
        """(source, stamp, offset of the true time from the system clock or None when unknown)."""
        sys_now, mono = self.clock.now(), self.clock.monotonic()
        gps_now = None if self._anchor is None else self._anchor[0] + (mono - self._anchor[1])
        offset = None if gps_now is None else gps_now - sys_now
        if self._kernel() and sys_now >= self.floor:
            return DISCIPLINED, Stamp(sys_now, True, mono, self.boot), offset if offset is not None else 0.0
        if gps_now is not None and offset is not None:
            if abs(offset) <= self.agree_s:
                return DISCIPLINED, Stamp(sys_now, True, mono, self.boot), offset
            return GPS, Stamp(gps_now, True, mono, self.boot), offset
        return UNSYNCED, Stamp(sys_now, False, mono, self.boot), None

    def stamp(self) -> Stamp:
        return self.assess()[1]

    @property
    def trusted(self) -> bool:
        return self.stamp().trusted

    def trusted_now(self) -> float | None:
        """Trusted time, or None: what retention, command expiry and queue days wait for."""
        st = self.stamp()
        return st.t if st.trusted else None

    def status(self) -> dict[str, Any]:
        """``GET /api/v1/status``'s ``time``: source, trusted, offset (seconds, true minus system clock)."""
        source, st, offset = self.assess()
        return {"source": source, "trusted": st.trusted, "offset": None if offset is None else round(offset, 3),
                "gps_rejected": self.rejected}

    # -- GPS ------------------------------------------------------------------------
    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def observe_gps(self, gps_time: float, mono: float) -> bool:
        """A fix's time, read at monotonic ``mono``; True if it is accepted as true time."""
        if gps_time + 60.0 < self.floor:
            years = (self.floor - gps_time) / (365.25 * 86400)
            self._warn_once("impossible", "GPS receiver reports %s, %.1f years before the latest trusted time (week-number"
                            " rollover?): its positions are kept, stamped with the node's time and untrusted",
                            _iso(gps_time), years)
            self.rejected = "impossible_date"
            return False
        if self._anchor is not None:
            expected = self._anchor[0] + (mono - self._anchor[1])
            if abs(gps_time - expected) > self.jump_s:
                self._warn_once("jump", "GPS time jumped by %.0f s, which the monotonic clock contradicts: ignored", gps_time - expected)
                self.rejected = "jump"
                return False
        self._anchor = (gps_time, mono)
        self.rejected = None
        return True

    # -- offsets for HQ, and the floor ------------------------------------------------------
    def take_fix(self) -> TimeFix | None:
        """Once per process, when trusted time is first known: the fix that corrects this boot's earlier records."""
        if self._fixed:
            return None
        source, st, offset = self.assess()
        if not st.trusted:
            return None
        self._fixed = True
        return TimeFix(self.boot, st.mono, st.t, offset or 0.0, source)

    def _read_floor(self) -> float:
        if self.floor_file is None:
            return 0.0
        try:
            return float(json.loads(self.floor_file.read_text())["t"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    def floor_due(self, every_s: float = 3600.0) -> float | None:
        """Trusted time to persist as the new floor, when it has moved ``every_s`` past the saved one (spares the SD card)."""
        t = self.trusted_now()
        if self.floor_file is None or t is None or t < self._saved_floor + every_s:
            return None
        return t

    def save_floor(self, t: float) -> None:
        """Write the floor durably (kit.files.write_atomic): blocking, run it in an executor."""
        assert self.floor_file is not None
        write_atomic(self.floor_file, json.dumps({"t": t}).encode())
        self._saved_floor = t
        self.floor = max(self.floor, t)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
