"""The trip page of the van UI and its GPX/GeoJSON exports."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone

import aiohttp_jinja2
from aiohttp import web

from kit import data_path
from kit.web import HttpProblem, json_response

from ..appkeys import CONFIG, SESSIONS, STORE, TRIPS
from ..status import node_status
from . import export
from .lifecycle import Trip, TripError
from .recorder import points
from .track import Place, detect_stops, distance_m, match


def _places() -> tuple[list[Place], dict[str, str]]:
    doc = json.loads(data_path("stops.json").read_text(encoding="utf-8"))
    places = [Place(p["code"], p["name"], p["lat"], p["lon"]) for p in [doc["base"], *doc["stops"], *doc.get("home_visits", [])]]
    return places, {p.code: p.name for p in places}


async def _day(request: web.Request) -> tuple[date, list[export.Point], list[export.Stop], dict[str, str]]:
    if request.app[SESSIONS].get(request) is None:
        raise web.HTTPSeeOther("/login")
    raw = request.query.get("date")
    try:
        day = date.fromisoformat(raw) if raw else datetime.fromtimestamp(request.app[CONFIG].clock.now(), timezone.utc).date()
    except ValueError as exc:
        raise HttpProblem("Дата має вигляд РРРР-ММ-ДД", code="bad_date", status=422, fields={"date": "РРРР-ММ-ДД"}) from exc
    places, names = _places()
    trip_id = request.query.get("trip")
    if trip_id:  # one trip: its track from departure to return, its stops as the lifecycle recorded them
        try:
            trip = await request.app[TRIPS].get(trip_id)
        except TripError as exc:
            raise HttpProblem(str(exc), code="not_found", status=404) from exc
        now = request.app[CONFIG].clock.now()
        start = trip.departed_at if trip.departed_at is not None else now
        pts = await points(request.app[STORE].db, start, (trip.returned_at if trip.returned_at is not None else now) + 1)
        names.update({s.id: s.name for s in trip.stops if s.name})
        stops = [export.Stop(s.arrived_at, s.departed_at if s.departed_at is not None else now, s.lat, s.lon,
                             s.place if s.place in names else (s.id if s.name else None)) for s in trip.stops if s.arrived_at is not None]
        return datetime.fromtimestamp(start, timezone.utc).date(), pts, stops, names
    t0 = datetime.combine(day, time.min, timezone.utc).timestamp()
    pts = await points(request.app[STORE].db, t0, t0 + 86400)
    stops = [match(s, places) for s in detect_stops(pts)]
    return day, pts, stops, names


async def trip_page(request: web.Request) -> web.Response:
    day, pts, stops, names = await _day(request)
    ctx = {"day": day.isoformat(), "prev": (day - timedelta(days=1)).isoformat(), "next": (day + timedelta(days=1)).isoformat(),
           "km": round(distance_m(pts) / 1000, 2), "stops": stops, "names": names, "drawing": export.svg(pts, stops, names),
           "points": len(pts), "status": await node_status(request.app), "session": request.app[SESSIONS].get(request),
           "fmt": lambda ts: datetime.fromtimestamp(ts).strftime("%H:%M") if ts is not None else "…",
           "trips": await request.app[TRIPS].for_day(day.isoformat()), "active": await request.app[TRIPS].active()}
    return aiohttp_jinja2.render_template("trip.html", request, ctx)


async def trip_action(request: web.Request) -> web.Response:
    """The administrator starts (a planned or an unplanned trip) or ends the trip by hand."""
    s = request.app[SESSIONS].get(request)
    if s is None:
        raise web.HTTPSeeOther("/login")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    trips, now = request.app[TRIPS], request.app[CONFIG].clock.now()
    action, trip_id = request.match_info["action"], str(form.get("trip", "")) or None
    try:
        if action == "depart":
            await trips.depart(now, s.username, trip_id)
        elif action == "return":
            await trips.return_(now, s.username)
        elif action == "cancel" and trip_id:
            await trips.cancel(trip_id, s.username)
        else:
            raise HttpProblem("Невідома дія", code="unknown_action", status=404)
    except TripError as exc:
        raise HttpProblem(str(exc), code="trip_conflict", status=409) from exc
    raise web.HTTPSeeOther("/trips")


def trip_json(t: Trip) -> dict[str, object]:
    return {"id": t.id, "kind": t.kind, "title": t.title, "planned_date": t.planned_date, "assigned_to": t.assigned_to,
            "state": t.state, "departed_at": t.departed_at, "returned_at": t.returned_at, "current_stop": t.current_stop, "km": t.km,
            "stops": [{"id": x.id, "planned": x.planned, "place": x.place, "name": x.name, "lat": x.lat, "lon": x.lon,
                       "from": x.window_from, "to": x.window_to, "purpose": x.purpose, "arrival": x.arrived_at, "departure": x.departed_at}
                      for x in t.stops]}


async def trips_api(request: web.Request) -> web.Response:
    request.app[SESSIONS].require(request)
    raw = request.query.get("date") or datetime.fromtimestamp(request.app[CONFIG].clock.now(), timezone.utc).date().isoformat()
    try:
        day = date.fromisoformat(raw)
    except ValueError as exc:
        raise HttpProblem("Дата має вигляд РРРР-ММ-ДД", code="bad_date", status=422, fields={"date": "РРРР-ММ-ДД"}) from exc
    active = await request.app[TRIPS].active()
    return json_response({"date": day.isoformat(), "active": None if active is None else active.id,
                          "trips": [trip_json(t) for t in await request.app[TRIPS].for_day(day.isoformat())]})


async def trip_gpx(request: web.Request) -> web.Response:
    day, pts, stops, names = await _day(request)
    name = f"{request.app[CONFIG].node_id} {day.isoformat()}" + (f" {request.query['trip'][:8]}" if request.query.get("trip") else "")
    body = export.gpx(pts, stops, name, names)
    return web.Response(text=body, content_type="application/gpx+xml",
                        headers={"Content-Disposition": f'attachment; filename="{name.replace(" ", "-")}.gpx"'})


async def trip_geojson(request: web.Request) -> web.Response:
    _, pts, stops, names = await _day(request)
    return json_response(export.geojson(pts, stops, names))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/trips", trip_page)
    app.router.add_get("/trips/track.gpx", trip_gpx)
    app.router.add_get("/trips/track.geojson", trip_geojson)
    app.router.add_post("/trips/{action}", trip_action)
    app.router.add_get("/api/v1/trips", trips_api)
