"""HQ and a van's untrusted times, in-process on a real SQLite file: time fixes correct records, impossible times are never shown."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hq import appstatus, vault
from hq.fleet import fleet_view
from hq.store import HQStore
from kit.timesource import WEEK_ROLLOVER_S
from sync import poscodec
from sync.clock import ManualClock
from sync.envelope import Envelope

BOOT = "b" * 32
TRUE = 1_796_000_000.0
BEHIND = 3 * 86400.0


@pytest.fixture
async def hq(tmp_path: Path) -> AsyncIterator[HQStore]:
    store = await HQStore.open(tmp_path / "hq.db", ManualClock(TRUE))
    await appstatus.create_schema(store)  # the records list shows each record's status, as in the app
    await vault.create_schema(store)
    yield store
    await store.close()


def application(rid: str, mono: float, trusted: bool = False) -> bytes:
    created = TRUE - BEHIND + mono if not trusted else TRUE + mono
    return json.dumps({"type": "application", "id": rid, "number": f"VAN-01-U-{rid}", "service_code": "RES-01", "created": created,
                       "version": 1, "fields": {}, "wrap_hq": "", "clock": {"trusted": trusted, "mono": mono, "boot": BOOT}}).encode()


def time_fix(mono: float) -> bytes:
    # at monotonic ``mono`` the true time was TRUE + mono: the van's clock was BEHIND
    return json.dumps({"type": "time_fix", "boot": BOOT, "mono": mono, "time": TRUE + mono, "offset": BEHIND, "source": "gps"}).encode()


async def records(hq: HQStore) -> dict[str, tuple[float, bool]]:
    return {r["id"]: (r["created"], r["time_trusted"]) for r in await vault.list_records(hq)}


async def test_a_time_fix_corrects_records_held_and_records_arriving_later(hq: HQStore) -> None:
    await hq.store_envelope(Envelope("van-01", "rec", 1, (application("r1", 10.0),), 1), "mqtt")
    assert await records(hq) == {"r1": (TRUE - BEHIND + 10.0, False)}  # shown as unconfirmed until the fix
    await hq.store_envelope(Envelope("van-01", "evt", 1, (time_fix(100.0),), 1), "mqtt")
    assert await records(hq) == {"r1": (TRUE + 10.0, True)}
    # a record of the same boot arriving after its fix (the streams are independent) is corrected on arrival
    await hq.store_envelope(Envelope("van-01", "rec", 2, (application("r2", 20.0),), 1), "mqtt")
    assert (await records(hq))["r2"] == (TRUE + 20.0, True)
    # a record already trusted is left alone
    await hq.store_envelope(Envelope("van-01", "rec", 3, (application("r3", 200.0, trusted=True),), 1), "mqtt")
    assert (await records(hq))["r3"] == (TRUE + 200.0, True)
    # the same fix again (a resend, a restart within the boot) changes nothing
    await hq.store_envelope(Envelope("van-01", "evt", 2, (time_fix(300.0),), 1), "mqtt")
    assert (await records(hq))["r1"] == (TRUE + 10.0, True)


async def test_an_impossible_position_time_never_reaches_the_fleet(hq: HQStore) -> None:
    rollover = poscodec.pack_position(poscodec.Position(TRUE - WEEK_ROLLOVER_S, 47.91, 33.39, 0.0, 0.0, True))
    await hq.store_envelope(Envelope("van-01", "pos", 1, (rollover,), 1), "mqtt")
    van = (await fleet_view(hq, TRUE))["nodes"][0]
    assert van["lat"] == pytest.approx(47.91)  # the position is kept
    assert van["position_time"] == TRUE and van["position_time_trusted"] is False  # HQ's arrival time, marked
    good = poscodec.pack_position(poscodec.Position(TRUE + 5, 47.92, 33.39, 0.0, 0.0, True))
    await hq.store_envelope(Envelope("van-01", "pos", 2, (good,), 1), "mqtt")
    van = (await fleet_view(hq, TRUE))["nodes"][0]
    assert van["position_time"] == TRUE + 5 and van["position_time_trusted"] is True


async def test_an_untrusted_position_is_corrected_by_its_boots_fix(hq: HQStore) -> None:
    # the van's clock is BEHIND: its untrusted position carries where it was on the boot's monotonic clock (v3 item)
    item = poscodec.pack_position(poscodec.Position(TRUE - BEHIND + 50, 47.91, 33.39, 0.0, 0.0, False, 50.0, poscodec.boot32(BOOT)))
    assert len(item) == poscodec.POS_V3.size and poscodec.unpack_position(item).mono == 50.0
    await hq.store_envelope(Envelope("van-01", "pos", 1, (item,), 1), "mqtt")
    van = (await fleet_view(hq, TRUE))["nodes"][0]
    assert van["position_time"] == TRUE - BEHIND + 50 and van["position_time_trusted"] is False
    await hq.store_envelope(Envelope("van-01", "evt", 1, (time_fix(100.0),), 1), "mqtt")
    van = (await fleet_view(hq, TRUE))["nodes"][0]
    assert van["position_time"] == TRUE + 50 and van["position_time_trusted"] is True
    # one arriving after the fix is corrected on arrival
    later = poscodec.pack_position(poscodec.Position(TRUE - BEHIND + 60, 47.92, 33.39, 0.0, 0.0, False, 60.0, poscodec.boot32(BOOT)))
    await hq.store_envelope(Envelope("van-01", "pos", 2, (later,), 1), "mqtt")
    van = (await fleet_view(hq, TRUE))["nodes"][0]
    assert van["position_time"] == TRUE + 60 and van["position_time_trusted"] is True
