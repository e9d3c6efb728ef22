"""The node's time source: which time it trusts, and why (kit/timesource.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kit.clock import ManualClock, SystemClock, kernel_synchronised
from kit.timesource import BUILD_FLOOR, DISCIPLINED, GPS, UNSYNCED, WEEK_ROLLOVER_S, TimeSource, boot_id, corrected

TRUE = 1_796_000_000.0  # 2026-11-30


def unsynced_clock(behind: float = 3 * 86400) -> ManualClock:
    c = ManualClock(TRUE - behind)
    c.synced = False
    return c


def test_the_kernel_flag_is_read_from_adjtimex() -> None:
    assert kernel_synchronised() in (True, False)  # a real answer from the kernel, not "cannot ask"
    assert SystemClock().synchronised() == kernel_synchronised()
    assert len(boot_id()) == 32 and boot_id() == boot_id()


def test_a_synchronised_clock_is_disciplined_and_an_unsynced_one_is_marked() -> None:
    assert TimeSource(ManualClock(TRUE)).status()["source"] == DISCIPLINED
    ts = TimeSource(unsynced_clock())
    st = ts.stamp()
    assert ts.status() == {"source": UNSYNCED, "trusted": False, "offset": None, "gps_rejected": None}
    assert not st.trusted and st.t == TRUE - 3 * 86400 and st.boot == ts.boot
    assert ts.trusted_now() is None and ts.take_fix() is None


def test_kernel_trust_can_be_switched_off_or_assumed() -> None:
    assert TimeSource(ManualClock(TRUE), trust_kernel=False).status()["source"] == UNSYNCED
    assert TimeSource(unsynced_clock(), assume_synchronised=True).status()["source"] == DISCIPLINED


def test_gps_time_corrects_a_clock_days_behind_and_survives_a_later_step() -> None:
    clock = unsynced_clock()
    ts = TimeSource(clock)
    early = ts.stamp()
    clock.advance(10)
    assert ts.observe_gps(TRUE + 10, clock.monotonic())
    src, st, offset = ts.assess()
    assert src == GPS and st.trusted and st.t == TRUE + 10 and offset == pytest.approx(3 * 86400)
    clock.advance(5)
    assert ts.now() == TRUE + 15
    clock._now += 3 * 86400  # chrony steps the system clock: the GPS anchor is monotonic, so now() does not move
    assert ts.now() == TRUE + 15 and ts.status()["source"] == DISCIPLINED
    fix = ts.take_fix()
    assert fix is not None and ts.take_fix() is None  # once per process
    # the record made before the fix gets its true time from the fix (same boot)
    t, trusted = corrected(early.wire(), early.t, {fix.boot: fix.time - fix.mono})
    assert trusted and t == TRUE
    assert corrected(early.wire(), early.t, {}) == (early.t, False)
    assert corrected({**early.wire(), "boot": "other"}, early.t, {fix.boot: fix.time - fix.mono}) == (early.t, False)


def test_gps_agreeing_with_the_system_clock_is_disciplined() -> None:
    clock = unsynced_clock(behind=0.5)
    ts = TimeSource(clock)
    assert ts.observe_gps(TRUE, clock.monotonic())
    assert ts.status()["source"] == DISCIPLINED and ts.stamp().t == clock.now()


def test_a_rollover_date_is_refused_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = unsynced_clock()
    ts = TimeSource(clock)
    caplog.set_level(logging.WARNING)
    for i in range(5):
        clock.advance(1)
        assert not ts.observe_gps(TRUE + i - WEEK_ROLLOVER_S, clock.monotonic())
    assert ts.status()["source"] == UNSYNCED and ts.status()["gps_rejected"] == "impossible_date"
    assert len([r for r in caplog.records if "rollover" in r.getMessage()]) == 1


def test_a_jump_the_monotonic_clock_contradicts_is_refused() -> None:
    clock = unsynced_clock()
    ts = TimeSource(clock)
    assert ts.observe_gps(TRUE, clock.monotonic())
    clock.advance(1)
    assert not ts.observe_gps(TRUE + 1 + 3600, clock.monotonic())  # an hour ahead after one second: spoofed or broken
    assert ts.status()["gps_rejected"] == "jump" and ts.now() == TRUE + 1
    clock.advance(1)
    assert ts.observe_gps(TRUE + 2.3, clock.monotonic())  # ordinary receiver jitter is fine


def test_the_floor_is_kept_durably_and_refuses_earlier_gps_time(tmp_path: Path) -> None:
    floor = tmp_path / "time_floor"
    ts = TimeSource(ManualClock(TRUE), floor)
    assert ts.floor == BUILD_FLOOR
    due = ts.floor_due(every_s=3600)
    assert due == TRUE
    ts.save_floor(due)
    assert ts.floor_due(every_s=3600) is None
    # next boot: the clock is unsynced, and a receiver says last month
    again = TimeSource(unsynced_clock(), floor)
    assert again.floor == TRUE
    assert not again.observe_gps(TRUE - 30 * 86400, again.monotonic())
    assert again.observe_gps(TRUE + 600, again.monotonic())
