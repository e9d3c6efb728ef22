"""kit.tasks: a loop that raises is logged at once, restarted with a capped backoff, counted, and shown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from kit.clock import ManualClock
from kit.tasks import Loops, background


async def settle(pred: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``pred`` holds (no wall-clock waiting: the clock is manual)."""
    for _ in range(10_000):
        if pred():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never reached: {what}")


class Flaky:
    """Raises ``fails`` times, then runs until stopped."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.starts = 0
        self.release = asyncio.Event()

    async def run(self) -> None:
        self.starts += 1
        if self.starts <= self.fails:
            raise RuntimeError(f"boom {self.starts}")
        await self.release.wait()


async def test_crash_is_logged_restarted_with_doubling_backoff_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    loops = Loops(clock, restart_min=1.0, restart_max=4.0)
    work = Flaky(fails=4)
    caplog.set_level(logging.ERROR, logger="kit.tasks")
    async with background(work.run, "uplink", loops):
        rec = loops.records["uplink"]
        waits = []
        for n in range(1, 5):
            await settle(lambda n=n: rec.restarts == n and rec.state == "restarting", f"restart {n}")
            assert work.starts == n  # not started again before its backoff is over
            # the traceback is in the log at once, before any restart
            assert sum("background loop uplink crashed" in r.getMessage() for r in caplog.records) == n
            assert caplog.records[-1].exc_info is not None and str(caplog.records[-1].exc_info[1]) == f"boom {n}"
            waited = 0.0
            while work.starts == n:
                clock.advance(0.5)
                waited += 0.5
                await settle(lambda n=n: work.starts > n or clock._waiters != [], "the backoff sleep")
            waits.append(waited)
        assert waits == [1.0, 2.0, 4.0, 4.0]  # doubles, capped at restart_max
        await settle(lambda: rec.state == "running", "running again")
        assert loops.snapshot() == {"uplink": {"state": "running", "restarts": 4, "last_error": "RuntimeError",
                                               "last_error_at": clock.now() - 4.0}}  # the 4th crash, 4 s ago
    assert rec.state == "stopped"


async def test_a_healthy_run_resets_the_backoff() -> None:
    clock = ManualClock()
    loops = Loops(clock, restart_min=1.0, restart_max=8.0)
    crash = asyncio.Event()

    async def run() -> None:
        await crash.wait()
        crash.clear()
        raise ValueError("late")

    async with background(run, "ingest", loops):
        rec = loops.records["ingest"]
        for n in (1, 2):
            await settle(lambda: rec.state == "running", "running")
            clock.advance(100.0)  # ran well past restart_max before failing
            crash.set()
            await settle(lambda n=n: rec.restarts == n, f"restart {n}")
            clock.advance(1.0)  # the minimum wait is enough every time
        await settle(lambda: rec.state == "running", "running after the second restart")


async def test_a_loop_that_returns_is_finished_and_a_bare_coroutine_is_not_restarted(caplog: pytest.LogCaptureFixture) -> None:
    loops = Loops(ManualClock())
    calls = 0

    async def done() -> None:
        nonlocal calls
        calls += 1

    async def broken() -> None:
        raise KeyError("x")

    async with background(done, "ignition", loops), background(broken(), "watchdog", loops):
        await settle(lambda: loops.records["ignition"].state == "finished" and loops.records["watchdog"].state == "failed", "both done")
        assert calls == 1 and loops.records["ignition"].restarts == 0
        assert loops.records["watchdog"].last_error == "KeyError"
    assert loops.records["ignition"].state == "stopped" and loops.records["watchdog"].state == "failed"
    assert any("watchdog failed" in r.getMessage() for r in caplog.records)
