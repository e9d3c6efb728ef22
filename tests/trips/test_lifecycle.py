"""The trip lifecycle driven by a simulated day: planned → departed → at_stop ⇄ between_stops → returned,
records linked to their stops, evidence for a home visit, retention counted from the close."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from devices.gps import Fix
from edge.errors import CryptoError
from edge.service_desk import ServiceDesk
from edge.store import Store
from edge.trips.lifecycle import Trips, TripError, create_schema
from edge.trips.recorder import TrackRecorder
from edge.trips.recorder import create_schema as recorder_schema
from edge.visits import HomeVisits
from firmware_sim.gps_pty import jittered
from firmware_sim.route import Route
from hq.planning import sealed_assignment
from hq.trips import evidence_distance
from provisioning.keys import HQKeys, NodeBundle
from sync import outbox
from sync.clock import ManualClock
from tests.conftest import ADMIN_PASSWORD
from tests.store.conftest import slots
from tests.trips.test_track import T0

def set_clock(clock: ManualClock, t: float) -> None:
    clock.advance(t - clock.now())


PARKED = 600  # s standing at the base before leaving and after coming back
DAY = 86400


def plan(trip_id: str = "plan-north") -> dict[str, object]:
    doc = json.loads((Path(__file__).parents[2] / "kit/data/stops.json").read_text(encoding="utf-8"))
    by_code = {s["code"]: s for s in doc["stops"]}
    return {"id": trip_id, "kind": "trip", "trip_kind": "van", "title": "Тернівський район", "planned_date": "2026-11-18",
            "stops": [{"place": c, "name": by_code[c]["name"], "lat": by_code[c]["lat"], "lon": by_code[c]["lon"],
                       "from": "09:00", "to": "12:00", "purpose": "idp" if c == "TER-IDP" else "remote"} for c in ("TER-IDP", "TER-MAS")]}


class Day:
    """A store with the trips component, fed one simulated second at a time through the recorder."""

    def __init__(self, store: Store, clock: ManualClock) -> None:
        self.store, self.clock = store, clock
        self.trips = Trips(store)
        store.trips = self.trips
        self.rec = TrackRecorder(store.db, clock)
        self.rec.listeners.append(self.trips.on_points)
        self.rnd = random.Random(7)
        self.store_path = Path()

    async def drive(self, route: Route, start: float, until: float, offset: float) -> None:
        """Fixes from ``start`` to ``until`` seconds of the route (the route begins at T0 + offset), flushed every 30 s."""
        s = start
        while s < until:
            p = jittered(route.at(s), 2.5, self.rnd)
            t = T0 + offset + s
            self.rec.on_fix(Fix(t, p.lat, p.lon, 3, p.speed, None, received=t))
            s += 1
            if int(s) % 30 == 0:
                set_clock(self.clock, t)
                await self.rec.flush()
        set_clock(self.clock, T0 + offset + until)
        await self.rec.flush()


@pytest.fixture
async def day(bundle: NodeBundle, tmp_path: Path) -> AsyncIterator[Day]:
    clock = ManualClock(T0)
    store = await Store.open(tmp_path / "node.db", bundle.node_id, bundle.hq_seal_public, clock)
    store.node_seal_wrapped = bundle.node_seal_wrapped
    await store.import_keyslots(slots(bundle))
    assert await store.unlock("admin", ADMIN_PASSWORD) is not None
    await recorder_schema(store.db)
    await create_schema(store.db)
    d = Day(store, clock)
    d.store_path = tmp_path / "node.db"
    yield d
    await store.close()


async def events(store: Store) -> list[dict[str, object]]:
    async with store.db.execute("SELECT payload FROM outbox WHERE stream = 'evt' ORDER BY seq") as cur:
        docs = [json.loads(r[0]) async for r in cur]
    return [d for d in docs if d.get("type") == "trip"]


async def test_a_simulated_day_runs_the_lifecycle_and_links_records(day: Day) -> None:
    route = Route.from_trip("TRIP-NORTH")
    await day.trips.receive_plan(plan())
    await day.trips.receive_plan(plan())  # the downlink again: nothing changes
    assert [t.state for t in await day.trips.for_day("2026-11-18")] == ["planned"]
    # Parked at the base first: nothing happens.
    base = route.at(0)
    for s in range(PARKED):
        day.rec.on_fix(Fix(T0 + s, base.lat, base.lon, 3, 0.0, None, received=T0 + s))
    await day.rec.flush()
    assert (await day.trips.get("plan-north")).state == "planned"

    idp = route.waypoints[1]
    legs = route.legs()
    arrive_idp = legs[0][2] / route.speed
    leave_idp = arrive_idp + idp.dwell_s
    arrive_mas = leave_idp + legs[1][2] / route.speed
    # Drive to the first stop and stand there for two minutes: not yet a stop (dwell < 5 min).
    await day.drive(route, 0, arrive_idp + 120, PARKED)
    trip = await day.trips.get("plan-north")
    assert trip.state == "departed" and abs(trip.departed_at - (T0 + PARKED)) < 40  # type: ignore[operator]
    desk = ServiceDesk(day.store)
    early = await desk.issue_ticket()  # made before the dwell proved the place a stop
    await day.drive(route, arrive_idp + 120, arrive_idp + 1800, PARKED)
    trip = await day.trips.get("plan-north")
    assert trip.state == "at_stop" and trip.current_stop == "plan-north-1"
    assert abs(trip.stops[0].arrived_at - (T0 + PARKED + arrive_idp)) < 60  # type: ignore[operator]
    app = await day.store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    applicant = await day.store.create_applicant({"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776"}, "admin")
    assert await day.trips.stop_of("queue_tickets", early.id) == ("plan-north", "plan-north-1")
    assert await day.trips.stop_of("applications", app.id) == ("plan-north", "plan-north-1")
    assert await day.trips.stop_of("applicants", applicant) == ("plan-north", "plan-north-1")

    await day.drive(route, arrive_idp + 1800, arrive_mas + 1200, PARKED)
    trip = await day.trips.get("plan-north")
    assert trip.state == "at_stop" and trip.current_stop == "plan-north-2"
    assert abs(trip.stops[0].departed_at - (T0 + PARKED + leave_idp)) < 60  # type: ignore[operator]
    second = await desk.issue_ticket()
    assert await day.trips.stop_of("queue_tickets", second.id) == ("plan-north", "plan-north-2")

    # Home and parked for ten minutes: returned, with the odometer's kilometres.
    await day.drive(route, arrive_mas + 1200, route.duration_s + PARKED, PARKED)
    trip = await day.trips.get("plan-north")
    assert trip.state == "returned"
    assert abs(trip.returned_at - (T0 + PARKED + route.duration_s)) < 60  # type: ignore[operator]
    assert trip.km is not None and abs(trip.km - route.length_m / 1000) < 0.02 * route.length_m / 1000
    assert [s.place for s in trip.stops] == ["TER-IDP", "TER-MAS"]
    evs = await events(day.store)
    assert [e["event"] for e in evs] == ["departed", "at_stop", "left_stop", "at_stop", "left_stop", "returned"]
    assert evs[0]["auto"] is True and evs[-1]["stops"] == 2
    assert evs[2]["stop"] == {"id": "plan-north-1", "records": {"applicants": 1, "applications": 1, "queue_tickets": 1}}
    assert evs[4]["stop"]["records"] == {"queue_tickets": 1}

    # The van's report counts the trip it ran, with its stops and the odometer's kilometres.
    from mobile_office.report import build

    rep = build(Path(day.store_path).parent, datetime.fromtimestamp(T0, timezone.utc).date(), datetime.fromtimestamp(T0, timezone.utc).date())
    assert rep["trips"] == 1 and rep["km"] == trip.km and [s["place"] for s in rep["trip_list"][0]["stops"]] == ["TER-IDP", "TER-MAS"]
    assert rep["trip_list"][0]["title"] == "Тернівський район" and rep["stops"] == 2

    # Retention counts from the stop's departure, not from when the application was made.
    await outbox.apply_ack(day.store.db, "rec", 100, day.clock.now())
    week = 7 * DAY
    set_clock(day.clock, trip.stops[0].departed_at + week - 60)  # type: ignore[operator]
    assert app.id not in await shredded(day.store, week)  # a week after creation, not yet after the close
    set_clock(day.clock, trip.stops[0].departed_at + week + 1)  # type: ignore[operator]
    assert app.id in await shredded(day.store, week)
    with pytest.raises(CryptoError):
        await day.store.read_application(app.id, "admin")


async def shredded(store: Store, retention: float) -> set[str]:
    await store.shred_expired(retention)
    async with store.db.execute("SELECT id FROM applications WHERE wrap_node IS NULL") as cur:
        return {r[0] async for r in cur}


async def test_open_stop_keeps_records_and_unlinked_ones_count_from_creation(day: Day) -> None:
    week = 7 * DAY
    outside = await day.store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")  # no trip running
    await day.trips.depart(day.clock.now(), "admin")
    await day.trips.arrive(day.clock.now() + 600, 48.014, 33.465)
    day.clock.advance(700)
    during = await day.store.create_application("Українка", "Леся", "3184710691", "SOC-01", "admin")
    await outbox.apply_ack(day.store.db, "rec", 100, day.clock.now())
    day.clock.advance(2 * week)
    assert await shredded(day.store, week) == {outside.id}  # the stop is still open: its record stays
    await day.trips.return_(day.clock.now(), "admin")
    day.clock.advance(week + 1)
    assert await shredded(day.store, week) == {outside.id, during.id}
    with pytest.raises(TripError):
        await day.trips.return_(day.clock.now(), "admin")


async def parked(day: Day, lat: float, lon: float, t0: float, seconds: int) -> None:
    for s in range(seconds):
        day.rec.on_fix(Fix(t0 + s, lat, lon, 3, 0.0, None, received=t0 + s))
        if s % 30 == 29:
            await day.rec.flush()
    await day.rec.flush()


async def test_manual_lifecycle_and_unplanned_stop(day: Day) -> None:
    await day.trips.receive_plan(plan("p2"))
    base = Route.from_trip("TRIP-NORTH").waypoints[0]
    await parked(day, base.lat, base.lon, T0 - 1200, 600)
    tid = await day.trips.depart(T0 - 600, "admin", "p2")
    await parked(day, base.lat, base.lon, T0 - 600, 600)  # started by hand in the yard: still in the yard is not "returned"
    assert (await day.trips.get(tid)).state == "departed"
    with pytest.raises(TripError):
        await day.trips.depart(day.clock.now(), "admin")
    stop = await day.trips.arrive(day.clock.now() + 900, 47.95, 33.30)  # nowhere near a planned stop
    trip = await day.trips.get(tid)
    assert stop == "p2-u3" and trip.state == "at_stop" and [s.planned for s in trip.stops if s.arrived_at] == [False]
    await day.trips.return_(day.clock.now() + 3600, "admin")
    trip = await day.trips.get(tid)
    assert trip.state == "returned" and trip.stops[0].departed_at == day.clock.now() + 3600
    assert (await events(day.store))[-1]["by"] == "admin"
    # Ended by hand far from the depot: driving on there starts no new trip until the van has been home.
    await parked(day, 47.95, 33.30, T0 + 3700, 400)
    await parked(day, 47.96, 33.30, T0 + 4100, 400)
    assert await day.trips.active() is None


async def test_home_visit_gets_its_gps_stop_as_evidence(day: Day, hq_keys: HQKeys) -> None:
    hv = json.loads((Path(__file__).parents[2] / "kit/data/stops.json").read_text(encoding="utf-8"))["home_visits"][0]
    item = sealed_assignment(hq_keys.node_seal_keys()["van-01"], "van-01", {"name": "Гнатюк Ганна", "address": "вул. Тестова, 7",
                                                                            "purpose": "субсидія", "categories": hv["category"]}, None, "admin")
    visits = HomeVisits(day.store)
    await visits.receive_assignment(item)
    # A case administrator's round: base → the home → base, 40 minutes at the address.
    route = Route.from_trip("TRIP-NORTH")
    route.waypoints = [route.waypoints[0], type(route.waypoints[0])(hv["code"], hv["name"], hv["lat"], hv["lon"], 2400.0), route.waypoints[0]]
    arrive = route.legs()[0][2] / route.speed
    await day.drive(route, 0, arrive + 90, 0)
    await visits.start(item["id"], "admin")  # a minute and a half after arriving: not yet known to be a stop
    assert (await day.trips.active()).state == "departed"  # type: ignore[union-attr]
    await day.drive(route, arrive + 90, arrive + 2000, 0)
    await visits.finish(item["id"], "admin")
    assert await day.trips.evidence(item["id"]) is None  # the van is still at the address
    await day.drive(route, arrive + 2000, route.duration_s + PARKED, 0)
    ev = await day.trips.evidence(item["id"])
    assert ev is not None and ev["source"] == "stop"
    assert abs(ev["arrival"] - (T0 + arrive)) < 60 and abs(ev["departure"] - (T0 + arrive + 2400)) < 60
    assert abs(ev["lat"] - hv["lat"]) < 0.0005 and abs(ev["lon"] - hv["lon"]) < 0.0007
    async with day.store.db.execute("SELECT category, n FROM visit_category_counts") as cur:
        assert [tuple(r) async for r in cur] == [("age80", 1)]
    async with day.store.db.execute("SELECT payload FROM outbox WHERE stream = 'evt'") as cur:
        docs = [json.loads(r[0]) async for r in cur]
    assert [d["type"] for d in docs].count("visit_evidence") == 1
    # The point travels sealed to HQ: no coordinate, no category in any event HQ receives.
    sent = next(d for d in docs if d["type"] == "visit_evidence")
    assert "lat" not in sent and "lon" not in sent and not any("categor" in json.dumps(d) or "age80" in json.dumps(d) for d in docs)
    assert evidence_distance("van-01", sent, hq_keys.seal, None) is None  # HQ has no address point: nothing to show
    assert evidence_distance("van-01", sent, hq_keys.seal, (hv["lat"], hv["lon"])) < 80  # type: ignore[operator]
    with pytest.raises(CryptoError):
        evidence_distance("van-02", sent, hq_keys.seal, (hv["lat"], hv["lon"]))  # bound to this van and visit
    # The visit's sealed details are shredded a retention period after its finish.
    day.clock.advance(8 * DAY)
    assert await day.store.shred_expired(7 * DAY) >= 1
    assert [v.details for v in await visits.list("admin")] == [{"shredded": True}]


async def test_evidence_from_the_track_without_a_trip(day: Day, hq_keys: HQKeys) -> None:
    item = sealed_assignment(hq_keys.node_seal_keys()["van-01"], "van-01", {"name": "Х", "address": "Y", "categories": []}, None, "admin")
    visits = HomeVisits(day.store)
    await visits.receive_assignment(item)
    base = Route.from_trip("TRIP-NORTH").at(0)
    # The van stands somewhere (no depot departure seen: no trip) for 20 minutes.
    for s in range(1200):
        day.rec.on_fix(Fix(T0 + s, base.lat + 0.05, base.lon, 3, 0.0, None, received=T0 + s))
    set_clock(day.clock, T0 + 100)
    await visits.start(item["id"], "admin")
    await day.rec.flush()
    set_clock(day.clock, T0 + 1100)
    await visits.finish(item["id"], "admin")
    ev = await day.trips.evidence(item["id"])
    # The stop as stored by the finish (the recorder keeps a parked point every 10 minutes).
    assert ev is not None and ev["source"] == "track" and ev["arrival"] <= T0 + 100 and ev["departure"] >= T0 + 600
    assert abs(ev["lat"] - (base.lat + 0.05)) < 1e-4


async def test_records_made_during_a_home_visit_close_with_its_finish(day: Day, hq_keys: HQKeys) -> None:
    week = 7 * DAY
    item = sealed_assignment(hq_keys.node_seal_keys()["van-01"], "van-01", {"name": "Х", "address": "Y", "categories": ["idp"]}, None, "admin")
    visits = HomeVisits(day.store)
    await visits.receive_assignment(item)
    await visits.start(item["id"], "admin")
    app = await day.store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")  # at the person's home, no trip
    await outbox.apply_ack(day.store.db, "rec", 100, day.clock.now())
    day.clock.advance(2 * week)
    assert await shredded(day.store, week) == set()  # the visit is still going on
    await visits.finish(item["id"], "admin")
    day.clock.advance(week - 60)
    assert await shredded(day.store, week) == set()
    day.clock.advance(120)
    assert await shredded(day.store, week) == {app.id}


async def test_hq_shred_command_forgets_open_visits_too(day: Day, hq_keys: HQKeys) -> None:
    item = sealed_assignment(hq_keys.node_seal_keys()["van-01"], "van-01", {"name": "Х", "address": "Y", "categories": []}, None, "admin")
    visits = HomeVisits(day.store)
    await visits.receive_assignment(item)
    await day.trips.depart(day.clock.now(), "admin")
    await day.trips.arrive(day.clock.now(), 48.014, 33.465)
    app = await day.store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    await outbox.apply_ack(day.store.db, "rec", 100, day.clock.now())
    assert await shredded(day.store, 7 * DAY) == set()
    assert await shredded(day.store, 0.0) == {app.id}  # a lost van: HQ's shred command (retention 0)
    assert [v.details for v in await visits.list("admin")] == [{"shredded": True}]
