"""A van driving a trip from stops.json: where it is at simulated time t.

Roads are not modelled: the van goes straight between waypoints at a
constant cruising speed and dwells at each stop for its planned time.
"""

from __future__ import annotations

import json
from itertools import pairwise
from dataclasses import dataclass
from pathlib import Path

from kit.geo import bearing, haversine
from kit import data_path

__all__ = ["Route", "SimPosition", "Waypoint", "bearing", "haversine"]

@dataclass(frozen=True)
class Waypoint:
    code: str
    name: str
    lat: float
    lon: float
    dwell_s: float


@dataclass(frozen=True)
class SimPosition:
    t: float  # seconds since the trip started
    lat: float
    lon: float
    speed: float  # m/s
    track: float
    at_stop: str | None


@dataclass
class Route:
    waypoints: list[Waypoint]
    speed: float = 40 / 3.6  # cruising, m/s

    @classmethod
    def from_trip(cls, trip_code: str, stops_file: Path | None = None, dwell_min: float | None = None) -> Route:
        """The trip's route; ``dwell_min`` replaces every stop's planned dwell (the demo shortens the day)."""
        doc = json.loads((stops_file or data_path("stops.json")).read_text(encoding="utf-8"))
        places = {doc["base"]["code"]: doc["base"], **{s["code"]: s for s in doc["stops"]}}
        trips = {t["code"]: t for t in doc["trips"]}
        if trip_code not in trips:
            raise KeyError(f"unknown trip {trip_code!r}; known: {', '.join(sorted(trips))}")
        wps = []
        for code in trips[trip_code]["route"]:
            p = places[code]
            dwell = p.get("dwell_min", 0) if dwell_min is None or code == doc["base"]["code"] else dwell_min
            wps.append(Waypoint(code, p["name"], p["lat"], p["lon"], 60.0 * dwell))
        return cls(wps)

    def legs(self) -> list[tuple[Waypoint, Waypoint, float]]:
        return [(a, b, haversine(a.lat, a.lon, b.lat, b.lon)) for a, b in pairwise(self.waypoints)]

    @property
    def length_m(self) -> float:
        return sum(d for _, _, d in self.legs())

    @property
    def duration_s(self) -> float:
        return sum(d / self.speed for _, _, d in self.legs()) + sum(w.dwell_s for w in self.waypoints[1:-1])

    def at(self, t: float) -> SimPosition:
        """Position t seconds into the trip (clamped to the end)."""
        t = max(0.0, t)
        elapsed = 0.0
        legs = self.legs()
        for i, (a, b, dist) in enumerate(legs):
            if i > 0:  # dwell at the stop where this leg starts
                if t < elapsed + a.dwell_s:
                    return SimPosition(t, a.lat, a.lon, 0.0, 0.0, a.code)
                elapsed += a.dwell_s
            drive = dist / self.speed
            if t < elapsed + drive:
                f = (t - elapsed) / drive
                return SimPosition(
                    t, a.lat + (b.lat - a.lat) * f, a.lon + (b.lon - a.lon) * f, self.speed, bearing(a.lat, a.lon, b.lat, b.lon), None
                )
            elapsed += drive
        last = self.waypoints[-1]
        return SimPosition(t, last.lat, last.lon, 0.0, 0.0, last.code)
