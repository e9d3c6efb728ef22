"""Late data fills history but never fires a live alert or moves a van back in time (real SQLite, injected now)."""

from __future__ import annotations

from pathlib import Path

from hq import fleet
from hq.store import HQStore
from sync.clock import ManualClock
from sync.envelope import Envelope
from sync.linkmgr import Heartbeat, pack_heartbeat
from sync.poscodec import Position, pack_position


def hb(t: float, backlog: int) -> bytes:
    return pack_heartbeat(Heartbeat(t, 50.45, 30.52, 0.0, 0.0, True, True, {"rec": backlog} if backlog else {}))


async def test_late_heartbeat_and_positions(tmp_path: Path) -> None:
    clock = ManualClock()
    now = clock.now()
    store = await HQStore.open(tmp_path / "hq.db", clock)
    try:
        # The van's newest word: nothing waiting, at its current place.
        await store.store_envelope(Envelope("van-01", "status", 2, (hb(now - 10, 0),), 2), "sbd")
        await store.store_envelope(Envelope("van-01", "pos", 3, (pack_position(Position(now - 5, 50.46, 30.53, trusted_time=True)),), 3), "mqtt")
        # An hour-old heartbeat (a big backlog then) and old positions arrive late, e.g. after a satellite-only stretch.
        await store.store_envelope(Envelope("van-01", "status", 1, (hb(now - 3600, fleet.BACKLOG_RECORDS + 50),), 1), "sbd")
        await store.store_envelope(Envelope("van-01", "pos", 1, tuple(pack_position(Position(now - 3600 + i, 50.40 + i / 1000, 30.50))
                                                                       for i in range(2)), 1), "mqtt")
        view = await fleet.fleet_view(store, clock.now())
        assert [a["code"] for a in view["alerts"]] == []
        node = view["nodes"][0]
        assert (node["lat"], node["position_time"]) == (50.46, now - 5)  # still where it is now, "as of" its own time
        track = await fleet.track(store, "van-01", now - 24 * 3600)
        assert [t for t, _, _ in track] == [now - 3600, now - 3599, now - 5]  # history filled in GPS-time order
        # A newer heartbeat that does report a backlog does raise the alert.
        await store.store_envelope(Envelope("van-01", "status", 3, (hb(now - 1, fleet.BACKLOG_RECORDS + 1),), 4), "sbd")
        assert [a["code"] for a in (await fleet.fleet_view(store, clock.now()))["alerts"]] == ["backlog"]
    finally:
        await store.close()
