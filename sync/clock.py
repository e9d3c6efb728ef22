"""Protocol time: the hybrid logical clock.

The clock itself lives on the floor (``kit.clock``); this module adds the
hybrid logical clock, which orders events across nodes even when wall
clocks disagree.
"""

from __future__ import annotations

from kit.clock import Clock, ManualClock, SystemClock

__all__ = ["HLC", "Clock", "ManualClock", "SystemClock"]


class HLC:
    """Hybrid logical clock packed in 64 bits: 48 bits of milliseconds, 16 of counter."""

    def __init__(self, clock: Clock, last: int = 0) -> None:
        self._clock = clock
        self.last = last

    def _wall_ms(self) -> int:
        return int(self._clock.now() * 1000) & ((1 << 48) - 1)

    def tick(self) -> int:
        wall = self._wall_ms() << 16
        self.last = wall if wall > self.last else self.last + 1
        return self.last

    def observe(self, remote: int) -> int:
        """Merge a timestamp received from the other end, then tick."""
        wall = self._wall_ms() << 16
        self.last = max(wall, self.last + 1, remote + 1)
        return self.last

    @staticmethod
    def millis(value: int) -> int:
        return value >> 16
