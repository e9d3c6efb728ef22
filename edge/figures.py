"""The van's tables as the facts of sync/figures.py: the department's figures on the van.

Used by ``mobile-office report`` on a van's data directory (through sqlite3)
and by the supervisor's day page (through the store's aiosqlite connection);
HQ adapts its copy of the same facts in hq/trips.py.  Only non-personal
metadata is read: nothing here needs the node key.

Trips are the lifecycle's trips (edge/trips/lifecycle.py) that departed in
the period.  A van that ran none (older data, no plans) falls back to its
recorded track split where it stood still or was off for more than
``TRIP_GAP``; HQ only knows the trips a van reports, so only the lifecycle's
trips are comparable with HQ.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from kit import data_path
from sync import figures

from .trips.track import Place, Point, detect_stops, distance_m, match, track

TRIP_GAP = 3 * 3600.0

Fetch = Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]]


def aiosqlite_fetch(db: Any) -> Fetch:
    """Rows from an aiosqlite connection; a table that does not exist (a component not set up) has none."""

    async def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            async with db.execute(sql, tuple(params)) as cur:
                return [tuple(r) for r in await cur.fetchall()]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise

    return fetch


def sqlite3_fetch(db: sqlite3.Connection) -> Fetch:
    """The same over a (read-only) sqlite3 connection, for the command line."""

    async def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return [tuple(r) for r in db.execute(sql, tuple(params)).fetchall()]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise

    return fetch


def places() -> list[Place]:
    doc = json.loads(data_path("stops.json").read_text(encoding="utf-8"))
    return [Place(p["code"], p["name"], p["lat"], p["lon"]) for p in [doc["base"], *doc["stops"], *doc.get("home_visits", [])]]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def period(start: date, end: date) -> tuple[float, float]:
    """Whole UTC days [start, end] as [t0, t1)."""
    return (datetime.combine(start, time.min, timezone.utc).timestamp(),
            datetime.combine(end + timedelta(days=1), time.min, timezone.utc).timestamp())


async def _lifecycle_trips(fetch: Fetch, t0: float, t1: float, known: dict[str, Place]) -> list[dict[str, Any]]:
    """Trips of the lifecycle that departed in the period, with their stops as recorded (``_reported_km``: km at return)."""
    out = []
    for tid, title, dep, ret, km in await fetch(
        "SELECT id, title, departed_at, returned_at, km FROM trips WHERE departed_at >= ? AND departed_at < ? ORDER BY departed_at", (t0, t1)
    ):
        reported = km
        if km is None:  # still out: the odometer so far, for the list
            km = round(distance_m([Point(t, la / 1e7, lo / 1e7) for t, la, lo in await fetch(
                "SELECT t, lat_e7, lon_e7 FROM track_points WHERE t >= ? ORDER BY t", (dep,))]) / 1000, 2)
        stops = await fetch(
            "SELECT place, name, arrived_at, departed_at, COALESCE(stop_lat, lat), COALESCE(stop_lon, lon) FROM trip_stops"
            " WHERE trip_id = ? AND arrived_at IS NOT NULL ORDER BY arrived_at", (tid,))
        out.append({"id": tid, "title": title, "start": _iso(dep), "end": _iso(ret) if ret is not None else None, "km": km,
                    "_departed": dep, "_reported_km": reported,
                    "stops": [{"place": p or "unplanned", "name": n or (known[p].name if p in known else "Незапланована зупинка"),
                               "arrival": _iso(a), "departure": _iso(d) if d is not None else None, "lat": round(la, 5), "lon": round(lo, 5)}
                              for p, n, a, d, la, lo in stops]})
    return out


async def _track_trips(fetch: Fetch, t0: float, t1: float, known: dict[str, Place]) -> list[dict[str, Any]]:
    """The recorded track split into trips at gaps of more than TRIP_GAP, stops by dwell detection (not the base)."""
    pts = [Point(t, la / 1e7, lo / 1e7) for t, la, lo in
           await fetch("SELECT t, lat_e7, lon_e7 FROM track_points WHERE t >= ? AND t < ? ORDER BY t", (t0, t1))]
    parts: list[list[Point]] = []
    for p in pts:
        if not parts or p.t - parts[-1][-1].t > TRIP_GAP:
            parts.append([])
        parts[-1].append(p)
    trips = []
    for tp in parts:
        clean = track(tp)
        stops = [s for s in (match(s, known.values()) for s in detect_stops(clean)) if s.place != "BASE"]
        km = round(distance_m(clean) / 1000, 2)
        trips.append({
            "start": _iso(tp[0].t), "end": _iso(tp[-1].t), "km": km, "_departed": tp[0].t, "_reported_km": km,
            "stops": [{"place": s.place or "unplanned", "name": known[s.place].name if s.place in known else "Незапланована зупинка",
                       "arrival": _iso(s.arrival), "departure": _iso(s.departure), "lat": round(s.lat, 5), "lon": round(s.lon, 5)}
                      for s in stops],
        })
    return trips


async def facts(fetch: Fetch, start: date, end: date) -> tuple[figures.Facts, list[dict[str, Any]]]:
    """The van's facts for whole days [start, end], and its trip list (the report's ``trip_list``)."""
    t0, t1 = period(start, end)
    known = {p.code: p for p in places()}
    trips = await _lifecycle_trips(fetch, t0, t1, known) or await _track_trips(fetch, t0, t1, known)
    f = figures.Facts()
    f.trips = [figures.Trip(t.pop("_departed"), t.pop("_reported_km"), len(t["stops"])) for t in trips]
    f.applications = [figures.Application(code, created, package, citizen) for code, created, package, citizen in await fetch(
        "SELECT service_code, created, package_code, citizen FROM applications WHERE created >= ? AND created < ?", (t0, t1))]
    f.tickets = [figures.Ticket(created, called, finished, status == "served", by) for created, called, finished, status, by in await fetch(
        "SELECT created, called_at, finished_at, status, served_by FROM queue_tickets WHERE created >= ? AND created < ?", (t0, t1))]
    f.ratings = [figures.Rating(int(s), at) for s, at in await fetch(
        "SELECT score, rated_at FROM ratings WHERE score IS NOT NULL AND rated_at >= ? AND rated_at < ?", (t0, t1))]
    f.visits = [at for (at,) in await fetch(
        "SELECT finished_at FROM visits WHERE status = 'finished' AND finished_at >= ? AND finished_at < ?", (t0, t1))]
    # Counted per day when each visit finished (categories travel sealed; the count keeps no visit id).
    f.visit_category_counts = {cat: int(n) for cat, n in await fetch(
        "SELECT category, SUM(n) FROM visit_category_counts WHERE day >= ? AND day <= ? GROUP BY category", (start.isoformat(), end.isoformat()))}
    return f, trips


async def report(fetch: Fetch, start: date, end: date) -> dict[str, Any]:
    """The department's figures for whole days [start, end] on this van (sync/figures.py), with the trip list."""
    f, trips = await facts(fetch, start, end)
    t0, t1 = period(start, end)
    return {"period": {"from": start.isoformat(), "to": end.isoformat()}, **figures.department(f, t0, t1), "trip_list": trips}
