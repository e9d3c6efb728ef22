"""From raw fixes to a clean track, stops and kilometres.

Everything works on the points' GPS timestamps sorted in time order, never on
arrival order or the wall clock: a batch back-filled after a tunnel or a
cold boot lands where it belongs, so distances are never negative and stops
are not missed.  Pure functions: the recorder and HQ's reports share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kit.geo import bearing, haversine

MAX_SPEED = 55.0  # m/s (~200 km/h): anything faster between two fixes is an outlier
PARKED_RADIUS = 15.0  # m: receiver wander while standing still
KEEP_DISTANCE = 25.0  # m between kept points while driving
KEEP_HEADING = 20.0  # degrees of course change worth a point
KEEP_INTERVAL = 60.0  # s: keep at least one point a minute while moving


@dataclass(frozen=True)
class Point:
    t: float  # GPS time, Unix seconds
    lat: float
    lon: float
    speed: float | None = None
    mode: int = 3


@dataclass(frozen=True)
class Stop:
    arrival: float
    departure: float
    lat: float
    lon: float
    place: str | None = None  # planned stop code, or None for an unplanned stop

    @property
    def dwell(self) -> float:
        return self.departure - self.arrival


def clean(points: Iterable[Point]) -> list[Point]:
    """Time order, no 1D/no-fix points, no duplicates, no impossible jumps."""
    out: list[Point] = []
    # (t, lat, lon): two fixes with one timestamp resolve the same way whatever order they came in
    for p in sorted((p for p in points if p.mode >= 2), key=lambda p: (p.t, p.lat, p.lon)):
        if out:
            last = out[-1]
            dt = p.t - last.t
            if dt <= 0:
                continue  # same instant twice
            if haversine(last.lat, last.lon, p.lat, p.lon) / dt > MAX_SPEED:
                continue  # a multipath jump, not the van
        out.append(p)
    return out


def smooth(points: Sequence[Point], window: int = 7, max_gap: float = 10.0) -> list[Point]:
    """Centred moving average over neighbours close in time: receiver noise shrinks by ~√window,
    so a parked van stops "driving" around its spot; straight roads keep their length."""
    half = window // 2
    out = []
    for i, p in enumerate(points):
        group = [q for q in points[max(0, i - half) : i + half + 1] if abs(q.t - p.t) <= max_gap]
        out.append(Point(p.t, sum(q.lat for q in group) / len(group), sum(q.lon for q in group) / len(group), p.speed, p.mode))
    return out


def track(points: Iterable[Point]) -> list[Point]:
    """The whole pipeline: what the recorder stores and the odometer counts."""
    return thin(smooth(clean(points)))


def thin(points: Sequence[Point]) -> list[Point]:
    """Keep what draws the route: distance, a turn, or time; drop parked wander."""
    if not points:
        return []
    kept = [points[0]]
    course: float | None = None
    for p in points[1:]:
        k = kept[-1]
        d = haversine(k.lat, k.lon, p.lat, p.lon)
        if d < PARKED_RADIUS and p.t - k.t < KEEP_INTERVAL * 10:
            continue
        c = bearing(k.lat, k.lon, p.lat, p.lon)
        turned = course is not None and abs((c - course + 180) % 360 - 180) >= KEEP_HEADING
        if d >= KEEP_DISTANCE or turned or p.t - k.t >= KEEP_INTERVAL:
            kept.append(p)
            course = c
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def distance_m(points: Sequence[Point]) -> float:
    """Odometer over a cleaned track, ignoring wander inside the parked radius."""
    total = 0.0
    anchor = None
    for p in points:
        if anchor is None:
            anchor = p
            continue
        d = haversine(anchor.lat, anchor.lon, p.lat, p.lon)
        if d >= PARKED_RADIUS:
            total += d
            anchor = p
    return total


def detect_stops(points: Sequence[Point], radius: float = 80.0, min_dwell: float = 300.0) -> list[Stop]:
    """Places where the van stayed within ``radius`` for at least ``min_dwell`` seconds (GPS time).

    A gap in the fixes (a tunnel, the engine off) inside the radius counts as
    staying: the van left no trace of moving away.
    """
    stops: list[Stop] = []
    i = 0
    n = len(points)
    while i < n:
        j = i
        lat_sum, lon_sum = points[i].lat, points[i].lon
        while j + 1 < n:
            c_lat, c_lon = lat_sum / (j - i + 1), lon_sum / (j - i + 1)
            q = points[j + 1]
            if haversine(c_lat, c_lon, q.lat, q.lon) > radius:
                break
            j += 1
            lat_sum += q.lat
            lon_sum += q.lon
        if points[j].t - points[i].t >= min_dwell:
            k = j - i + 1
            stops.append(Stop(points[i].t, points[j].t, lat_sum / k, lon_sum / k))
            i = j + 1
        else:
            i += 1
    return stops


@dataclass(frozen=True)
class Place:
    code: str
    name: str
    lat: float
    lon: float


def match(stop: Stop, places: Iterable[Place], geofence: float = 400.0) -> Stop:
    """Name the stop after the nearest planned place within the geofence, else leave it unplanned."""
    best = min(places, key=lambda p: haversine(stop.lat, stop.lon, p.lat, p.lon), default=None)
    if best is not None and haversine(stop.lat, stop.lon, best.lat, best.lon) <= geofence:
        return Stop(stop.arrival, stop.departure, stop.lat, stop.lon, best.code)
    return stop
