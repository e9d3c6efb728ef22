"""HQ's numbers from the vans' events, records and ratings: fleet totals equal the sum of the vans."""

from __future__ import annotations

import json

import pytest

from hq.trips import TripPlanError, compute, csv_text, fold_trips, parse_stops

T = 1_795_000_000.0


def ev(**doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_fleet_and_per_van_numbers() -> None:
    plans = [("t1", "van-01", "van", "Тернівський район", "2026-11-18", None, json.dumps([{"place": "TER-IDP"}])),
             ("t9", "van-02", "van", "Ще не виїхав", "2026-11-18", None, "[]")]
    events = [
        ("van-01", ev(type="trip", id="t1", event="departed", at=T)),
        ("van-01", ev(type="trip", id="t1", event="at_stop", at=T + 600, stop={"id": "t1-1", "place": "TER-IDP", "name": "IDP", "lat": 48.0, "lon": 33.4})),
        ("van-01", ev(type="trip", id="t1", event="left_stop", at=T + 7800, stop={"id": "t1-1", "records": {"applications": 3}})),
        ("van-01", ev(type="trip", id="t1", event="returned", at=T + 9000, km=30.6, stops=1)),
        ("van-02", ev(type="trip", id="a2", event="departed", at=T + 100)),  # an unplanned trip, still out
        ("van-02", ev(type="trip", id="old", event="departed", at=T - 10 * 86400)),  # outside the period
        ("van-01", ev(type="queue", event="issued", id="q1", at=T + 700)),
        ("van-01", ev(type="queue", event="called", id="q1", at=T + 1300, by="olena")),
        ("van-01", ev(type="queue", event="served", id="q1", at=T + 1900, by="olena")),
        ("van-01", ev(type="queue", event="issued", id="q3", at=T + 1000)),
        ("van-01", ev(type="queue", event="called", id="q3", at=T + 2000, by="olena")),
        ("van-01", ev(type="queue", event="served", id="q3", at=T + 3100, by="olena")),
        ("van-02", ev(type="queue", event="issued", id="z1", at=T + 100)),
        ("van-02", ev(type="queue", event="called", id="z1", at=T + 160, by="olena")),  # another Olena, on another van
        ("van-02", ev(type="queue", event="served", id="z1", at=T + 460, by="olena")),
        ("van-01", ev(type="queue", event="issued", id="q2", at=T + 800)),  # never served
        ("van-02", ev(type="visit", event="finished", id="v1", at=T + 500)),
        ("van-02", ev(type="visit", event="finished", id="v2", at=T + 600)),
        ("van-02", b"not json"),
    ]
    records = [("van-01", "RES-01", T + 1000, None), ("van-01", "SOC-01", T + 2000, "PKG"), ("van-01", "PEN-01", T + 2000, "PKG"),
               ("van-02", "RES-01", T + 3000, None), ("van-02", "RES-01", T - 86400 * 5, None)]
    ratings = [("van-01", 5), ("van-01", 2), ("van-02", 4)]
    rep = compute(T - 3600, T + 86400, ["van-01", "van-02", "van-03"], plans, events, records, ratings,
                  [("v1", "age80,disability"), ("v2", "age80")])
    v1, v2 = rep["per_van"]["van-01"], rep["per_van"]["van-02"]
    assert (v1["trips"], v1["km"], v1["stops"]) == (1, 30.6, 1)
    assert (v2["trips"], v2["km"]) == (1, 0.0)
    assert v1["citizens_served"] == 2  # two intakes (a package is one citizen); two tickets served
    assert v1["applications_by_category"] == {"pension": 1, "residence": 1, "social": 1}
    # Olena served 2 citizens between her first call (T+1300) and her last finish (T+3100): half an hour.
    assert v1["workload"] == {"served_from_queue": 2, "avg_wait_min": 13.3, "avg_service_min": 14.2, "citizens_per_admin_hour": 4.0,
                              "per_admin": {"olena": {"served": 2, "hours": 0.5, "per_hour": 4.0}}}
    # Fleet-wide the two Olenas are two people: 3 citizens in 0.5 h + 5 min.
    assert rep["workload"]["citizens_per_admin_hour"] == round(3 / (0.5 + 300 / 3600), 1)
    assert set(rep["workload"]["per_admin"]) == {"van-01/olena", "van-02/olena"}
    assert v2["home_visits_by_category"] == {"age80": 2, "disability": 1, "finished": 2}
    assert rep["per_van"]["van-03"]["trips"] == 0
    for key in ("trips", "stops", "citizens_served"):
        assert rep[key] == sum(r[key] for r in rep["per_van"].values())
    assert rep["ratings"] == {"count": 3, "positive_share": 0.667}
    assert rep["home_visits_by_category"] == {"age80": 2, "disability": 1, "finished": 2}
    assert [(t["id"], t["state"]) for t in rep["trip_list"]] == [("t1", "returned"), ("a2", "departed"), ("t9", "planned")]
    assert rep["trip_list"][0]["stops"][0]["departure"] is not None and rep["trip_list"][0]["stops"][0]["records"] == {"applications": 3}
    rows = csv_text(rep).splitlines()
    assert rows[1].startswith("van-01,t1,Тернівський район,returned,") and len(rows) == 4


def test_fold_keeps_unknown_trips_and_stop_times() -> None:
    trips = fold_trips([], [("van-01", ev(type="trip", id="x", event="departed", at=T)),
                            ("van-01", ev(type="trip", id="x", event="at_stop", at=T + 60, stop={"id": "x-u1"})),
                            ("van-01", ev(type="trip", id="x", event="cancelled", at=T + 61))])
    assert trips["x"]["kind"] == "adhoc" and trips["x"]["stops"][0]["arrival"] == T + 60 and trips["x"]["state"] == "cancelled"


def test_plan_stops_are_validated() -> None:
    stops = parse_stops([{"place": "TER-IDP", "from": "09:00", "to": "11:00", "purpose": "idp"},
                         {"place": "", "name": "Школа", "lat": "48.03", "lon": "33.48"}, {"place": "", "lat": ""}])
    assert [s["name"] for s in stops] == ["Модульне містечко для ВПО, Тернівський район", "Школа"]
    for bad, word in (([{"place": "", "lat": "abc", "lon": "1"}], "широту"), ([{"place": "", "lat": "10", "lon": "10"}], "Україн"),
                      ([{"place": "TER-IDP", "from": "9"}], "ГГ:ХХ"), ([], "хоча б одну")):
        with pytest.raises(TripPlanError, match=word):
            parse_stops(bad)
