"""Protocol time: the hybrid logical clock.

The clock itself lives on the floor (``kit.clock``); this module adds the
hybrid logical clock, which orders events across nodes even when wall
clocks disagree.

A timestamp from the other end is merged only when it is in range (it fits
the signed 64 bits both databases store, so it can be re-encoded and stored)
and not further ahead of this end's clock than ``max_skew`` seconds: one
signed message with a huge HLC must not drag this clock (and every ack or
envelope it stamps afterwards) past what can be encoded.
"""

from __future__ import annotations

from kit.clock import Clock, ManualClock, SystemClock

from .errors import EnvelopeError

__all__ = ["DEFAULT_MAX_SKEW", "HLC", "HLC_MAX", "Clock", "ClockSkew", "ManualClock", "SystemClock"]

# Signed 64-bit: what SQLite's INTEGER and PostgreSQL's BIGINT hold.
HLC_MAX = (1 << 63) - 1
# Seconds a received HLC may be ahead of the receiver's clock (kit/settings.py: max_clock_skew).
DEFAULT_MAX_SKEW = 86400.0
_MS_MASK = (1 << 48) - 1


class ClockSkew(EnvelopeError):
    """A received HLC is out of range or too far ahead: the message is quarantined, never merged."""


class HLC:
    """Hybrid logical clock packed in 64 bits: 48 bits of milliseconds, 16 of counter."""

    def __init__(self, clock: Clock, last: int = 0, max_skew: float = DEFAULT_MAX_SKEW) -> None:
        self._clock = clock
        self.last = last
        self.max_skew = max_skew

    def _wall_ms(self) -> int:
        return int(self._clock.now() * 1000) & _MS_MASK

    def tick(self) -> int:
        wall = self._wall_ms() << 16
        # ``last`` is bounded by ``check`` below, so +1 stays far inside HLC_MAX
        self.last = wall if wall > self.last else min(self.last + 1, HLC_MAX)
        return self.last

    def check(self, remote: int) -> str | None:
        """Why ``remote`` must not be merged, or None when it may be."""
        if not 0 <= remote <= HLC_MAX:
            return f"HLC {remote} out of range"
        ahead = ((remote >> 16) - self._wall_ms()) / 1000.0
        if ahead > self.max_skew:
            return f"HLC {ahead:.0f} s ahead of this clock (limit {self.max_skew:.0f} s)"
        return None

    def observe(self, remote: int) -> int:
        """Merge a timestamp received from the other end, then tick; ClockSkew (state unchanged) if out of bounds."""
        reason = self.check(remote)
        if reason is not None:
            raise ClockSkew(reason)
        wall = self._wall_ms() << 16
        self.last = min(max(wall, self.last + 1, remote + 1), HLC_MAX)
        return self.last

    @staticmethod
    def millis(value: int) -> int:
        return value >> 16
