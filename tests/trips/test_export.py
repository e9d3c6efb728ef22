"""The trip page, GPX and GeoJSON of a recorded day, through the van's web app."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from devices.gps import Fix
from edge.app import create_app
from edge.appkeys import STORE, TRIPS
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
        _, pts = drive("TRIP-STRIKE", seed=2)
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


async def test_one_trip_as_gpx_with_its_recorded_stops(bundle: NodeBundle, tmp_path: Path) -> None:
    app = create_app(node_config(bundle, tmp_path / "node"))
    async with TestClient(TestServer(app)) as c:
        await c.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        trips = app[TRIPS]
        await trips.receive_plan({"id": "p1", "kind": "trip", "title": "Після обстрілу", "planned_date": None,
                                  "stops": [{"place": None, "name": "Двір школи № 12", "lat": 47.885, "lon": 33.355, "purpose": "attack"}]})
        rec = TrackRecorder(app[STORE].db, ManualClock(T0))
        rec.listeners.append(trips.on_points)  # the GPS runs the lifecycle: departed, at the stop, returned
        _, pts = drive("TRIP-STRIKE", seed=2)
        for i, p in enumerate(pts + [type(pts[-1])(pts[-1].t + s, pts[-1].lat, pts[-1].lon) for s in range(1, 400)]):
            rec.on_fix(Fix(p.t, p.lat, p.lon, 3, p.speed, None, received=p.t))
            if i % 30 == 29:
                await rec.flush()
        await rec.flush()
        assert (await trips.get("p1")).state == "returned"
        r = await c.get("/trips/track.gpx?trip=p1")
        assert r.status == 200
        root = ET.fromstring(await r.read())
        assert [w.findtext(f"{GPX}name") for w in root.findall(f"{GPX}wpt")] == ["Двір школи № 12"]
        assert len(root.findall(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt")) > 50
        assert "Після обстрілу" in await (await c.get("/trips?date=" + datetime.fromtimestamp(T0, timezone.utc).date().isoformat())).text()
        assert (await c.get("/trips/track.geojson?trip=nope")).status == 404
