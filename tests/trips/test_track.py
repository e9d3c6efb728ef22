"""Stops, kilometres and filtering against a simulated trip's ground truth."""

from __future__ import annotations

import json
import random
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.trips.track import Place, Point, clean, detect_stops, distance_m, match, track
from firmware_sim.gps_pty import jittered
from firmware_sim.route import Route
from kit import data_path

T0 = 1_795_000_000.0


def places() -> list[Place]:
    doc = json.loads(data_path("stops.json").read_text(encoding="utf-8"))
    return [Place(p["code"], p["name"], p["lat"], p["lon"]) for p in [doc["base"], *doc["stops"]]]


def drive(trip: str, seed: int = 1, tunnel: tuple[float, float] | None = None, cold_start: float = 0.0) -> tuple[Route, list[Point]]:
    """1 Hz fixes along the route with 2.5 m receiver noise, a tunnel without fixes and a cold start."""
    route = Route.from_trip(trip)
    rnd = random.Random(seed)
    pts = []
    for s in range(int(route.duration_s) + 1):
        if s < cold_start or (tunnel and tunnel[0] <= s < tunnel[1]):
            continue
        p = jittered(route.at(s), 2.5, rnd)
        pts.append(Point(T0 + s, p.lat, p.lon, p.speed))
    return route, pts


def test_odometer_matches_ground_truth_within_two_percent() -> None:
    route, pts = drive("TRIP-NORTH", tunnel=(2000, 2300), cold_start=120)
    # Truth: what the van drove after its first fix (nothing can count the cold start's 120 s of driving).
    truth = route.length_m - 120 * route.speed
    km = distance_m(track(pts))
    assert abs(km - truth) / truth < 0.02, (km, truth)
    assert abs(distance_m(track(drive("TRIP-STRIKE", seed=4)[1])) - Route.from_trip("TRIP-STRIKE").length_m) < 0.02 * 20_000


def test_stops_found_where_and_when_the_van_stood() -> None:
    route, pts = drive("TRIP-NORTH", seed=3)
    found = [match(s, places()) for s in detect_stops(clean(pts))]
    assert [s.place for s in found] == ["TER-IDP", "TER-MAS"]
    planned = {w.code: w.dwell_s for w in route.waypoints[1:-1]}
    for s in found:
        assert abs(s.dwell - planned[s.place]) < 120  # minutes of dwell, to within the arrival/departure blur


def test_back_filled_points_change_nothing() -> None:
    _, pts = drive("TRIP-SOUTH", seed=5)
    shuffled = pts[:]
    random.Random(9).shuffle(shuffled)  # a tunnel's batch arriving late, cold-boot clock jumps
    a, b = clean(pts), clean(shuffled)
    assert a == b
    assert distance_m(a) == distance_m(b)
    assert detect_stops(a) == detect_stops(b)


def test_outliers_and_no_fix_are_dropped() -> None:
    pts = [Point(T0, 47.9, 33.4), Point(T0 + 1, 47.9001, 33.4), Point(T0 + 2, 48.9, 33.4),  # 111 km in 1 s
           Point(T0 + 3, 47.9002, 33.4), Point(T0 + 4, 0.0, 0.0, mode=1)]
    assert [p.t for p in clean(pts)] == [T0, T0 + 1, T0 + 3]


def test_parked_jitter_adds_no_kilometres() -> None:
    rnd = random.Random(2)
    base = Route.from_trip("TRIP-NORTH").at(0)
    pts = [Point(T0 + s, *(lambda j: (j.lat, j.lon))(jittered(base, 4.0, rnd))) for s in range(3600)]
    assert distance_m(track(pts)) < 50
    assert len(track(pts)) < 20  # an hour parked is a handful of stored points


@given(st.lists(st.tuples(st.floats(0, 10_000), st.floats(47.8, 48.1), st.floats(33.2, 33.6)), max_size=60), st.randoms())
@settings(max_examples=60, deadline=None)
def test_properties(raw: list[tuple[float, float, float]], rnd: random.Random) -> None:
    pts = [Point(T0 + t, lat, lon) for t, lat, lon in raw]
    cleaned = clean(pts)
    assert all(b.t > a.t for a, b in pairwise(cleaned))
    assert distance_m(cleaned) >= 0
    shuffled = pts[:]
    rnd.shuffle(shuffled)
    assert clean(shuffled) == cleaned
