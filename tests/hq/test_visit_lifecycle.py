"""HQ's side of a home visit: kept before it is sent, acknowledged, and the evidence shown as a distance, never a point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hq import planning
from hq.app import HQConfig, create_app
from hq.appkeys import STORE
from provisioning.keys import HQKeys
from sync.clock import ManualClock
from sync.envelope import Envelope
from tests.conftest import Broker
from tests.hq.test_public_schedule import T0


def ev(**doc: object) -> bytes:
    return json.dumps(doc).encode()


async def test_delivery_state_and_distance(hq_keys: HQKeys, bundle: Any, mosquitto: Broker, tmp_path: Path) -> None:
    cfg = HQConfig(data_dir=tmp_path / "hqdata", keys=hq_keys, broker=mosquitto.url, host="127.0.0.1", clock=ManualClock(T0))
    cfg.data_dir.mkdir()
    async with TestClient(TestServer(create_app(cfg))) as client:
        app, db = client.app, client.app[STORE].db
        vid = await planning.assign_home_visit(app, "van-01", {"name": "Гнатюк Ганна", "address": "вул. Тестова, 7", "lat": 47.91,
                                                               "lon": 33.39, "categories": ["age80"]}, "2026-11-20", "olena", "disp")
        [v] = await planning.listing(db, "2026-11-18")
        assert v["id"] == vid and v["delivery"] in ("sent", "unsent") and v["has_point"] and v["distance_m"] is None
        async with db.execute("SELECT sealed, item FROM hq_visits JOIN hq_visit_msgs USING (visit_id)") as cur:
            for sealed, item in await cur.fetchall():
                assert "Гнатюк" not in item and "47.91" not in item and "47.91" not in sealed  # nothing in the clear at HQ
        await client.app[STORE].store_envelope(Envelope("van-01", "evt", 1, (
            ev(type="down_ack", stream="assign", kind="assign", id=vid, result="applied", at=T0 + 5),
            ev(type="visit", id=vid, event="started", at=T0 + 60),
            ev(type="visit", id=vid, event="finished", at=T0 + 1800),
            ev(type="visit_evidence", id=vid, source="stop", arrival=T0, departure=T0 + 2000, lat=47.9111, lon=33.3911, distance_m=150),
        ), 1), "mqtt")
        await planning.project(db)
        [v] = await planning.listing(db, "2026-11-18")
        assert (v["delivery"], v["state"], v["distance_m"]) == ("delivered", "finished", 150.0)
        assert "lat" not in v and "lon" not in v
        # A finished visit is not changed from HQ.
        with pytest.raises(planning.PlanningError):
            await planning.change(app, vid, cancel=True)
