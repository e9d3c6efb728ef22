"""One day on a van, then the same day at HQ from what the van sent: every department figure agrees.

The van's side is its real node tables (store, trip lifecycle driven by the
recorder, queue, ratings, home visits), read by the CLI report and by the
supervisor's day page; HQ's side is a real HQ store that ingested the van's
outbox (the ``rec`` and ``evt`` items as they travel) and answers through
the same report as its page, CSV and JSON.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.figures import period
from edge.service_desk import ServiceDesk
from edge.store import Store
from edge.supervisor import day_report
from edge.trips.lifecycle import create_schema
from edge.trips.recorder import create_schema as recorder_schema
from edge.visits import HomeVisits
from firmware_sim.route import Route
from hq import projections
from hq import trips as hq_trips
from hq.planning import sealed_assignment
from hq.store import HQStore
from mobile_office.report import build
from provisioning.keys import HQKeys, NodeBundle
from sync.clock import ManualClock
from sync.envelope import Envelope
from tests.conftest import ADMIN_PASSWORD
from tests.store.conftest import slots
from tests.trips.test_lifecycle import PARKED, Day, plan, set_clock
from tests.trips.test_track import T0

FIGURES = ("trips", "km", "stops", "citizens_served", "applications_by_category", "home_visits_by_category", "ratings", "workload")


async def _van_day(store: Store, clock: ManualClock, hq_keys: HQKeys) -> None:
    """A returned planned trip, one still out, five applications of three people, a queue, ratings, two home visits."""
    day = Day(store, clock)
    route = Route.from_trip("TRIP-NORTH")
    await day.trips.receive_plan(plan())
    await day.drive(route, 0, route.duration_s + PARKED, PARKED)
    assert (await day.trips.get("plan-north")).state == "returned"

    set_clock(clock, T0 + 6 * 3600)
    a = await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    await store.create_applications("Українка", "Леся", "3184710691", ["SOC-01", "PEN-01"], "admin", package_code="PKG-X")
    clock.advance(1200)
    b = await store.create_application("Шевченко", "Тарас", "1759013776", "SOC-01", "admin")  # the same person, a second intake
    clock.advance(60)
    await store.create_application("Франко", "Іван", "2245100057", "RES-02", "admin")
    desk = ServiceDesk(store)
    await desk.rate(await desk.rating_token(a.id), 5, "")
    await desk.rate(await desk.rating_token(b.id), 3, "дякую")
    tickets = [await desk.issue_ticket() for _ in range(4)]
    for t, served, minutes in ((tickets[0], True, 10), (tickets[1], True, 25), (tickets[2], False, 3)):
        clock.advance(240)
        assert (await desk.call_next("olena")).id == t.id  # type: ignore[union-attr]
        clock.advance(minutes * 60)
        await desk.finish(t.id, served, "olena")  # the fourth ticket still waits

    visits = HomeVisits(store)
    seal = hq_keys.node_seal_keys()[store.node_id]
    plans = [sealed_assignment(seal, store.node_id, {"name": "Гнатюк Ганна", "address": "вул. Тестова, 7", "categories": cats},
                               "2026-11-18", "olena") for cats in (["age80", "disability"], [])]
    for item in plans:
        await visits.receive_assignment(item)
        await visits.start(item["id"], "olena")
        clock.advance(900)
        await visits.finish(item["id"], "olena")

    clock.advance(600)
    await day.trips.depart(clock.now(), "admin")  # an unplanned trip, still out at the end of the day
    await day.trips.arrive(clock.now() + 600, 48.014, 33.465)


async def _sent_to_hq(store: Store, hq: HQStore) -> None:
    """The van's outbox as it travels: each stream's items in one envelope, stored by HQ exactly as the uplink would."""
    for stream in ("rec", "evt"):
        async with store.db.execute("SELECT seq, payload FROM outbox WHERE stream = ? ORDER BY seq", (stream,)) as cur:
            rows = [(int(r[0]), bytes(r[1])) for r in await cur.fetchall()]
        assert rows and rows[0][0] == 1
        res = await hq.store_envelope(Envelope(store.node_id, stream, 1, tuple(p for _, p in rows), 1), "mqtt")
        assert res.contiguous == len(rows)


async def test_van_and_hq_compute_every_figure_the_same(bundle: NodeBundle, hq_keys: HQKeys, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    (tmp_path / "node").mkdir()
    (tmp_path / "hqdb").mkdir()
    store = await Store.open(tmp_path / "node" / "node.db", bundle.node_id, bundle.hq_seal_public, clock)
    store.node_seal_wrapped = bundle.node_seal_wrapped
    await store.import_keyslots(slots(bundle))
    assert await store.unlock("admin", ADMIN_PASSWORD) is not None
    await recorder_schema(store.db)
    await create_schema(store.db)
    hq = await HQStore.open(tmp_path / "hqdb" / "hq.db", ManualClock(T0))
    try:
        await hq_trips.create_schema(hq.db)
        await _van_day(store, clock, hq_keys)
        async with store.db.execute("SELECT id FROM visits ORDER BY received") as cur:
            vids = [r[0] for r in await cur.fetchall()]
        # HQ keeps the categories of the visits it assigned (the van gets them sealed).
        for vid, cats in zip(vids, (["age80", "disability"], []), strict=True):
            await hq_trips.record_visit_plan(hq.db, vid, store.node_id, "2026-11-18", "olena", cats, T0)
        await _sent_to_hq(store, hq)
        supervisor = (await day_report(store.db, clock.now()))["figures"]
    finally:
        await store.close()

    day = datetime.fromtimestamp(T0, timezone.utc).date()
    van = build(tmp_path / "node", day, day)
    t0, t1 = period(day, day)

    async def fetch(sql: str, params: Any) -> list[tuple[Any, ...]]:
        async with hq.db.execute(sql, tuple(params)) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    try:
        at_hq = await hq_trips.report(fetch, t0, t1)
        # HQ's pages read the period's events through the projection (issue 19 item 6): the very same report.
        await projections.create_schema(hq.db)
        assert await projections.project(hq.db) > 0
        assert await hq_trips.report(fetch, t0, t1, projections.EVENTS_SQL) == at_hq
        assert await projections.project(hq.db) == 0  # incremental: nothing new, nothing re-read
    finally:
        await hq.close()

    # What happened, so that agreement on zeros could not pass.
    assert van["trips"] == 2 and van["stops"] == 3 and van["km"] > 25
    assert van["citizens_served"] == 3  # Шевченко twice, Українка's package, Франко: three people, five applications
    assert van["applications_by_category"] == {"pension": 1, "residence": 2, "social": 2}
    assert van["home_visits_by_category"] == {"age80": 1, "disability": 1, "finished": 2, "none": 1}
    assert van["ratings"] == {"count": 2, "positive_share": 0.5}
    assert van["workload"]["served_from_queue"] == 2 and van["workload"]["avg_service_min"] == 17.5
    assert set(van["workload"]["per_admin"]) == {"olena"}
    for key in FIGURES:
        assert at_hq["per_van"][bundle.node_id][key] == van[key], key
        assert supervisor[key] == van[key], key
        if key != "workload":  # the fleet's names an administrator by van
            assert at_hq[key] == van[key], key
    assert at_hq["workload"]["per_admin"] == {f"{bundle.node_id}/olena": van["workload"]["per_admin"]["olena"]}
    assert [t["id"] for t in at_hq["trip_list"]] == [t["id"] for t in van["trip_list"]]
