"""The trip page, GPX and GeoJSON of a recorded day, through the van's web app."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from devices.gps import Fix
from edge.app import create_app
from edge.appkeys import STORE
from edge.trips.recorder import TrackRecorder, create_schema
from provisioning.keys import NodeBundle
from sync.clock import ManualClock
from tests.conftest import ADMIN_PASSWORD
from tests.trips.test_track import T0, drive
from tests.unit.test_node_api import node_config

GPX = "{http://www.topografix.com/GPX/1/1}"


async def test_trip_page_gpx_and_geojson(bundle: NodeBundle, tmp_path: Path) -> None:
    app = create_app(node_config(bundle, tmp_path / "node"))
    async with TestClient(TestServer(app)) as c:
        assert (await c.get("/trips", allow_redirects=False)).status == 303  # login first
        await c.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        db = app[STORE].db
        await create_schema(db)
        rec = TrackRecorder(db, ManualClock(T0))
        route, pts = drive("TRIP-STRIKE", seed=2)
        for p in pts:
            rec.on_fix(Fix(p.t, p.lat, p.lon, 3, p.speed, None, received=p.t))
        await rec.flush()
        day = datetime.fromtimestamp(T0, timezone.utc).date().isoformat()

        page = await (await c.get(f"/trips?date={day}")).text()
        assert "<polyline" in page and "Будинки, пошкоджені внаслідок обстрілу" in page

        r = await c.get(f"/trips/track.gpx?date={day}")
        assert r.status == 200 and r.content_type == "application/gpx+xml"
        root = ET.fromstring(await r.read())
        trkpts = root.findall(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt")
        assert len(trkpts) > 50 and all(t.find(f"{GPX}time") is not None for t in trkpts)
        assert [w.findtext(f"{GPX}name") for w in root.findall(f"{GPX}wpt")] == ["Будинки, пошкоджені внаслідок обстрілу, Металургійний район"]

        gj = await (await c.get(f"/trips/track.geojson?date={day}")).json()
        kinds = [f["properties"]["kind"] for f in gj["features"]]
        assert kinds == ["track", "stop"] and gj["features"][1]["properties"]["place"] == "MET-STR"
        assert (await c.get("/trips?date=вчора")).status == 422
