"""Trips at HQ: planning a van's trip, the trip history per van, and the department's numbers across the fleet.

A plan goes to the van as a signed ``assign`` downlink item of ``"kind": "trip"``
(stops, positions, time windows and purposes are not personal data: signed,
not sealed).  What happened comes back as the van's ``evt`` items
(``type`` trip / visit / visit_evidence / queue); HQ folds them into the trip
history when asked (``history``), so no projection has to be kept in step.

Home visits' citizen categories are kept at HQ by visit id, without the name
or address (those travel sealed to the van only), so that HQ can report
home visits by category.  A visit's evidence (where the van stood) arrives
sealed to HQ's key (``point_sealed``): HQ never shows the point, only its
distance to the visit's address point, and only when HQ has one
(``evidence_distance``); the point is not even opened otherwise.

``compute`` is pure and synchronous: the HQ pages feed it rows read through
aiosqlite (or the PostgreSQL backend), ``mobile-office report --data-dir HQ_DIR``
through sqlite3.  SQL here is portable (``?`` placeholders, ON CONFLICT).
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from aiohttp import web

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from kit import data_path
from kit.geo import haversine
from sync import crypto, figures
from kit.web import HttpProblem, json_response
from . import i18n, projections
from .db import migrate, transaction

from .appkeys import CONFIG, DOWNLINK, SESSIONS, STORE
from .pages import allow_tiles, language, page, session, tr

MIGRATIONS = [
    """
    CREATE TABLE trip_plans (
        trip_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, kind TEXT NOT NULL, title TEXT NOT NULL, planned_date TEXT,
        assigned_to TEXT, stops TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, created_by TEXT NOT NULL
    );
    CREATE TABLE visit_plans (
        visit_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, planned_date TEXT, assigned_to TEXT, categories TEXT NOT NULL, created DOUBLE PRECISION NOT NULL
    );
    """,
    # The public schedule's "the van is here now" mark, opt-out per trip (hq/schedule.py).
    "ALTER TABLE trip_plans ADD COLUMN presence_public BIGINT NOT NULL DEFAULT 1;",
]

PURPOSES = {"idp": "Поселення ВПО", "remote": "Віддалений населений пункт", "attack": "Після обстрілу", "home": "Домашні візити",
            "other": "Інше"}
TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
Fetch = Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]]


class TripPlanError(ValueError):
    """A plan that cannot be made; the message is for people (Ukrainian; ``key`` and ``values`` give it in the page's language)."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(i18n.translate(key, "uk").format(**values))
        self.key, self.values = key, values


async def create_schema(db: Any) -> None:
    await migrate(db, "hq_trips", MIGRATIONS)


def category_labels(lang: str = "uk") -> dict[str, str]:
    """The categories' names for a page: Ukrainian from the domain data, other languages from HQ's catalogue (data's name if it lacks one)."""
    doc = json.loads(data_path("citizen_categories.json").read_text(encoding="utf-8"))
    names = {c["code"]: c["name"] if lang == "uk" or f"citizen_category.{c['code']}" not in i18n.E else i18n.translate(f"citizen_category.{c['code']}", lang)
             for c in doc["categories"]}
    return {"finished": i18n.translate("ind.finished", lang), **names}


def places() -> dict[str, dict[str, Any]]:
    doc = json.loads(data_path("stops.json").read_text(encoding="utf-8"))
    return {p["code"]: p for p in doc["stops"]}


# -- planning -------------------------------------------------------------------
def trip_item(trip_id: str, kind: str, title: str, planned_date: str | None, assigned_to: str | None,
              stops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": trip_id, "kind": "trip", "trip_kind": kind, "title": title, "planned_date": planned_date,
            "assigned_to": assigned_to, "stops": stops}


def parse_stops(rows: Iterable[dict[str, str]]) -> list[dict[str, Any]]:
    """Form rows (place code or lat/lon, window, purpose) into plan stops; TripPlanError names the bad field."""
    known = places()
    out = []
    for i, r in enumerate(rows, 1):
        place = (r.get("place") or "").strip()
        if not place and not (r.get("lat") or "").strip():
            continue
        stop: dict[str, Any] = {"place": place or None, "purpose": (r.get("purpose") or "other").strip()[:60] or "other"}
        if place in known:
            stop.update(name=known[place]["name"], lat=known[place]["lat"], lon=known[place]["lon"])
        else:
            try:
                stop.update(lat=float(r.get("lat") or ""), lon=float(r.get("lon") or ""))
            except ValueError as exc:
                raise TripPlanError("trips.err.place", n=i) from exc
            if not (44.0 <= stop["lat"] <= 53.0 and 22.0 <= stop["lon"] <= 41.0):
                raise TripPlanError("trips.err.outside", n=i)
            stop["name"] = (r.get("name") or place or f"Зупинка {i}").strip()[:200]
        for key in ("from", "to"):
            value = (r.get(key) or "").strip()
            if value and not TIME_RE.match(value):
                raise TripPlanError("trips.err.time", n=i)
            stop[key] = value or None
        out.append(stop)
    if not out:
        raise TripPlanError("trips.err.no_stops")
    return out


async def plan_trip(app: web.Application, node_id: str, title: str, planned_date: str | None, kind: str, assigned_to: str | None,
                    stops: list[dict[str, Any]], actor: str, presence_public: bool = True) -> str:
    """Sign and send the plan to the van, then keep it; TripPlanError if it is wrong, NotConnected if it cannot go now.

    ``presence_public``: whether the public schedule may say "the van is here now" for this trip's stops.
    """
    if kind not in ("van", "home_round"):
        raise TripPlanError("trips.err.kind")
    store, cfg = app[STORE], app[CONFIG]
    trip_id = uuid.uuid4().hex
    item = trip_item(trip_id, kind, title, planned_date, assigned_to, stops)
    await app[DOWNLINK].send(node_id, "assign", [item], "план не надіслано")
    async with transaction(store.db):
        await store.db.execute(
            "INSERT INTO trip_plans(trip_id, node_id, kind, title, planned_date, assigned_to, stops, created, created_by, presence_public)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trip_id) DO NOTHING",
            (trip_id, node_id, kind, title, planned_date, assigned_to, json.dumps(stops, ensure_ascii=False), cfg.clock.now(), actor,
             0 if not presence_public else 1),
        )
    return trip_id


async def record_visit_plan(db: Any, visit_id: str, node_id: str, planned_date: str | None, assigned_to: str | None,
                            categories: list[str], now: float) -> None:
    """The categories of a home visit HQ assigned, for the reports (no name, no address)."""
    async with transaction(db):
        await db.execute(
            "INSERT INTO visit_plans(visit_id, node_id, planned_date, assigned_to, categories, created) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (visit_id) DO NOTHING",
            (visit_id, node_id, planned_date, assigned_to, ",".join(sorted(set(categories))), now),
        )


def evidence_distance(node_id: str, doc: dict[str, Any], hq_seal: X25519PrivateKey,
                      address: tuple[float, float] | None) -> float | None:
    """Metres from a visit's address point to where the van stood; None (show nothing) while HQ has no
    address point for the visit, or the evidence carries no sealed point."""
    sealed = doc.get("point_sealed")
    if address is None or not isinstance(sealed, str):
        return None
    point = json.loads(crypto.unwrap_with_private(bytes.fromhex(sealed), hq_seal, crypto.evidence_context(node_id, str(doc.get("id")))))
    return haversine(address[0], address[1], float(point["lat"]), float(point["lon"]))


# -- the numbers ----------------------------------------------------------------
def _load(payload: Any) -> dict[str, Any] | None:
    try:
        doc = json.loads(bytes(payload))
    except (ValueError, TypeError):
        return None
    return doc if isinstance(doc, dict) else None


def fold_trips(plans: Iterable[tuple[Any, ...]], events: Iterable[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """Trip history from the plans and the vans' trip events, by trip id."""
    trips: dict[str, dict[str, Any]] = {}
    for trip_id, node_id, kind, title, planned_date, assigned_to, stops in plans:
        trips[trip_id] = {"id": trip_id, "node_id": node_id, "kind": kind, "title": title, "planned_date": planned_date,
                          "assigned_to": assigned_to, "state": "planned", "departed_at": None, "returned_at": None, "km": None,
                          "planned_stops": json.loads(stops), "stops": []}
    for node_id, payload in events:
        doc = _load(payload)
        if doc is None or doc.get("type") != "trip":
            continue
        t = trips.setdefault(str(doc.get("id")), {"id": str(doc.get("id")), "node_id": node_id, "kind": "adhoc", "title": "",
                                                   "planned_date": None, "assigned_to": None, "state": "planned", "departed_at": None,
                                                   "returned_at": None, "km": None, "planned_stops": [], "stops": []})
        ev, at = doc.get("event"), doc.get("at")
        if ev == "departed":
            t.update(state="departed", departed_at=at)
        elif ev == "at_stop":
            s = doc.get("stop") or {}
            t["stops"].append({"id": s.get("id"), "place": s.get("place"), "name": s.get("name") or "", "lat": s.get("lat"),
                               "lon": s.get("lon"), "arrival": at, "departure": None, "records": {}})
            t["state"] = "at_stop"
        elif ev == "left_stop":
            sid = (doc.get("stop") or {}).get("id")
            for s in t["stops"]:
                if s["id"] == sid and s["departure"] is None:
                    s["departure"] = at
                    s["records"] = (doc.get("stop") or {}).get("records") or {}
            t["state"] = "between_stops"
        elif ev == "returned":
            t.update(state="returned", returned_at=at, km=doc.get("km"))
        elif ev == "cancelled":
            t["state"] = "cancelled"
    return trips


def facts(plans: Iterable[tuple[Any, ...]], events: list[tuple[str, Any]], records: Iterable[tuple[Any, ...]],
          ratings: Iterable[tuple[Any, ...]], visit_plans: Iterable[tuple[Any, ...]], start: float, end: float,
          nodes: Iterable[str] = ()) -> tuple[dict[str, figures.Facts], list[dict[str, Any]]]:
    """HQ's copy of what the vans sent, as each van's facts (sync/figures.py), and the folded trips."""
    cats = {vid: [c for c in str(c_).split(",") if c] for vid, c_ in visit_plans}
    per: dict[str, figures.Facts] = {n: figures.Facts() for n in nodes}
    folded = list(fold_trips(plans, events).values())
    for t in folded:
        if t["departed_at"] is not None:
            per.setdefault(t["node_id"], figures.Facts()).trips.append(figures.Trip(float(t["departed_at"]), t["km"], len(t["stops"])))
    for node_id, code, created, package, *rest in records:
        per.setdefault(node_id, figures.Facts()).applications.append(
            figures.Application(str(code), float(created), package, rest[0] if rest else None))
    for node_id, score, *at in ratings:
        per.setdefault(node_id, figures.Facts()).ratings.append(figures.Rating(int(score), float(at[0]) if at else start))
    tickets: dict[tuple[str, Any], dict[str, Any]] = {}
    for node_id, payload in events:
        doc = _load(payload)
        if doc is None or not isinstance(doc.get("at"), (int, float)):
            continue
        f = per.setdefault(node_id, figures.Facts())
        if doc.get("type") == "visit" and doc.get("event") == "finished":
            f.visits.append(float(doc["at"]))
            if start <= doc["at"] < end:  # the van counts the categories when a visit finishes: the same, from the plan
                for c in figures.visit_categories(cats.get(str(doc.get("id")))):
                    f.visit_category_counts[c] = f.visit_category_counts.get(c, 0) + 1
        elif doc.get("type") == "queue":
            tk = tickets.setdefault((node_id, doc.get("id")), {})
            tk[str(doc.get("event"))] = float(doc["at"])
            if doc.get("event") == "called":
                tk["by"] = doc.get("by")
    for (node_id, _tid), tk in tickets.items():
        finished = tk.get("served", tk.get("no_show"))
        issued = tk.get("issued", tk.get("called", finished))
        if issued is not None:
            per[node_id].tickets.append(figures.Ticket(issued, tk.get("called"), finished, "served" in tk, tk.get("by")))
    return per, folded


def compute(start: float, end: float, nodes: Iterable[str], plans: Iterable[tuple[Any, ...]], events: list[tuple[str, Any]],
            records: Iterable[tuple[Any, ...]], ratings: Iterable[tuple[Any, ...]], visit_plans: Iterable[tuple[Any, ...]]) -> dict[str, Any]:
    """The department's numbers for [start, end) across the fleet and per van (the figures of sync/figures.py, as the van's report).

    Rows: records (node_id, service_code, created, package[, citizen]), ratings (node_id, score[, at]).
    """
    per, folded = facts(plans, events, records, ratings, visit_plans, start, end, nodes)
    trips = [t for t in folded if t["departed_at"] is not None and start <= t["departed_at"] < end]
    d0 = datetime.fromtimestamp(start, timezone.utc).date().isoformat()
    d1 = datetime.fromtimestamp(end - 1, timezone.utc).date().isoformat()
    # Plans for the period not (yet) run are listed for the dispatcher, not counted.
    waiting = [t for t in folded if t["departed_at"] is None and t["planned_date"] and d0 <= t["planned_date"] <= d1]
    out = figures.fleet(per, start, end)
    out["per_van"] = {n: figures.department(f, start, end) for n, f in sorted(per.items())}
    out["trip_list"] = [trip_row(t) for t in sorted(trips, key=lambda t: (t["departed_at"], t["node_id"]))]
    out["trip_list"] += [trip_row(t) for t in sorted(waiting, key=lambda t: (t["planned_date"], t["node_id"]))]
    return out


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(float(ts), timezone.utc).isoformat(timespec="seconds")


def trip_row(t: dict[str, Any]) -> dict[str, Any]:
    return {"id": t["id"], "node_id": t["node_id"], "kind": t["kind"], "title": t["title"], "state": t["state"],
            "planned_date": t["planned_date"], "assigned_to": t["assigned_to"], "start": _iso(t["departed_at"]), "end": _iso(t["returned_at"]),
            "km": t["km"], "stops": [{"place": s["place"] or "unplanned", "name": s["name"], "arrival": _iso(s["arrival"]),
                                      "departure": _iso(s["departure"]), "lat": s["lat"], "lon": s["lon"], "records": s.get("records", {})}
                                     for s in t["stops"]],
            "planned_stops": t["planned_stops"]}


QUERIES = {
    "nodes": ("SELECT node_id FROM node_state ORDER BY node_id", False),
    "plans": ("SELECT trip_id, node_id, kind, title, planned_date, assigned_to, stops FROM trip_plans ORDER BY created", False),
    "events": ("SELECT node_id, payload FROM items WHERE stream = 'evt' ORDER BY node_id, seq", False),
    "records": ("SELECT node_id, service_code, created, package_code, citizen FROM records WHERE created >= ? AND created < ?", True),
    "ratings": ("SELECT node_id, score, at FROM ratings WHERE at >= ? AND at < ?", True),
    "visit_plans": ("SELECT visit_id, categories FROM visit_plans", False),
}


async def report(fetch: Fetch, start: float, end: float, events_sql: str | None = None) -> dict[str, Any]:
    """``fetch(sql, params)`` returns rows: aiosqlite at HQ, sqlite3 in the CLI.

    ``events_sql``: the period's events through HQ's projection (hq/projections.py ``EVENTS_SQL``) instead of every event
    stored; the CLI, which has no live projection, reads them all.
    """
    rows = {k: await fetch(sql, (start, end) if period else ()) for k, (sql, period) in QUERIES.items() if not (events_sql and k == "events")}
    if events_sql:
        d0 = datetime.fromtimestamp(start, timezone.utc).date().isoformat()
        d1 = datetime.fromtimestamp(end - 1, timezone.utc).date().isoformat()
        rows["events"] = await fetch(events_sql, projections.events_params(start, end, d0, d1))
    return compute(start, end, [r[0] for r in rows["nodes"]], rows["plans"], [(r[0], r[1]) for r in rows["events"]],
                   rows["records"], rows["ratings"], rows["visit_plans"])


def period(request: web.Request, today: date) -> tuple[date, date, float, float]:
    try:
        d0 = date.fromisoformat(request.query.get("from") or (today - timedelta(days=30)).isoformat())
        d1 = date.fromisoformat(request.query.get("to") or today.isoformat())
    except ValueError as exc:
        raise HttpProblem("Дата має вигляд РРРР-ММ-ДД", code="bad_date", status=422, fields={"from": "РРРР-ММ-ДД", "to": "РРРР-ММ-ДД"}) from exc
    t0 = datetime.combine(d0, time.min, timezone.utc).timestamp()
    t1 = datetime.combine(d1 + timedelta(days=1), time.min, timezone.utc).timestamp()
    return d0, d1, t0, t1


def csv_text(rep: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["node_id", "trip_id", "title", "state", "start", "end", "km", "stops", "place", "name", "arrival", "departure", "lat", "lon"])
    for t in rep["trip_list"]:
        for s in t["stops"] or [{}]:
            w.writerow([t["node_id"], t["id"], t["title"], t["state"], t["start"], t["end"], t["km"], len(t["stops"]), s.get("place", ""),
                        s.get("name", ""), s.get("arrival", ""), s.get("departure", ""), s.get("lat", ""), s.get("lon", "")])
    return out.getvalue()


# -- web ------------------------------------------------------------------------
async def _fetcher(request: web.Request) -> Fetch:
    db = request.app[STORE].db

    async def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with db.execute(sql, tuple(params)) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    return fetch


async def _report(request: web.Request) -> tuple[date, date, dict[str, Any]]:
    today = datetime.fromtimestamp(request.app[CONFIG].clock.now(), timezone.utc).date()
    d0, d1, t0, t1 = period(request, today)
    await projections.project(request.app[STORE].db)  # what arrived since the loop's last round
    rep = await report(await _fetcher(request), t0, t1, projections.EVENTS_SQL)
    rep["period"] = {"from": d0.isoformat(), "to": d1.isoformat()}
    van = request.query.get("node_id")
    if van:
        rep["trip_list"] = [t for t in rep["trip_list"] if t["node_id"] == van]
    return d0, d1, rep


async def trips_page(request: web.Request) -> web.Response:
    s = session(request)
    d0, d1, rep = await _report(request)
    nodes = sorted(rep["per_van"])
    ctx = {"rep": rep, "from": d0.isoformat(), "to": d1.isoformat(), "nodes": nodes, "node_id": request.query.get("node_id", ""),
           "places": places(), "purposes": PURPOSES, "session": s, "labels": category_labels(language(request)),
           "sent": request.query.get("planned"), "tile_url": request.app[CONFIG].tile_url,
           "tile_attribution": request.app[CONFIG].tile_attribution}
    resp = await page(request, "trips.html", ctx)
    if request.app[CONFIG].tile_url:
        allow_tiles(resp, request.app[CONFIG].tile_url)  # the stop picker's map
    return resp


async def trips_csv(request: web.Request) -> web.Response:
    session(request)
    d0, d1, rep = await _report(request)
    return web.Response(text=csv_text(rep), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="trips-{d0}-{d1}.csv"'})


async def trips_json(request: web.Request) -> web.Response:
    session(request)
    _d0, _d1, rep = await _report(request)
    return json_response(rep)


async def trip_plan_submit(request: web.Request) -> web.Response:
    s = session(request, "command")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    node_id = str(form.get("node_id", ""))
    if node_id not in {n["node_id"] for n in await request.app[STORE].fleet()}:
        raise HttpProblem("Невідомий фургон", code="unknown_node", status=422, fields={"node_id": "невідомий фургон"})
    planned_date = str(form.get("planned_date", "")).strip() or None
    if planned_date is not None:
        try:
            date.fromisoformat(planned_date)
        except ValueError as exc:
            raise HttpProblem("Дата має вигляд РРРР-ММ-ДД", code="validation_failed", status=422, fields={"planned_date": "РРРР-ММ-ДД"}) from exc
    rows = [{k: str(v) for k, v in zip(("place", "lat", "lon", "from", "to", "purpose", "name"), vals, strict=True)}
            for vals in zip(*(form.getall(k, []) for k in ("place", "lat", "lon", "from", "to", "purpose", "name")), strict=False)]  # a short column drops the incomplete rows
    try:
        stops = parse_stops(rows)
        await plan_trip(request.app, node_id, str(form.get("title", "")).strip()[:200], planned_date, str(form.get("kind", "van")),
                        str(form.get("assigned_to", "")).strip() or None, stops, s.username,
                        presence_public=not form.get("hide_presence"))
    except TripPlanError as exc:
        raise HttpProblem(tr(request, exc.key, **exc.values), code="plan_failed", status=422) from exc
    raise web.HTTPSeeOther("/trips?planned=1")


async def _schema_ctx(app: web.Application) -> AsyncIterator[None]:
    await create_schema(app[STORE].db)
    yield


def add_routes(app: web.Application) -> None:
    """One line in hq/app.py: after the store's cleanup context, so the schema is created on its connection."""
    app.cleanup_ctx.append(_schema_ctx)
    app.cleanup_ctx.append(projections.projections_ctx)
    app.router.add_get("/trips", trips_page)
    app.router.add_post("/trips", trip_plan_submit)
    app.router.add_get("/trips.csv", trips_csv)
    app.router.add_get("/api/v1/trips", trips_json)
    app.router.add_get("/api/v1/report", trips_json)

