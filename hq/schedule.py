"""The public schedule: where the vans will stand, for citizens, without login and without personal data.

``GET /public/schedule`` (page), ``/public/schedule.ics`` (iCalendar, RFC 5545)
and ``/public/schedule.json`` (for the city's website) publish the planned
stops of van trips from today on: place, date, time window and purpose.
Home-visit rounds and stops whose purpose is a home visit never appear (an
address there is a person's home).  The trip's title is the dispatcher's free
text and is not published either.

"The van is here now" comes from the van's own ``at_stop`` / ``left_stop`` /
``returned`` events, folded incrementally into ``stop_presence`` (own cursor,
``hq/events.py``).  It is coarse (a yes, never the van's position or time of
arrival) and a dispatcher can switch it off per trip when planning.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from kit.web import json_response

from .appkeys import CONFIG, STORE
from .db import DB, migrate
from .events import fold_events
from .pages import page
from .trips import PURPOSES

MIGRATIONS = [
    """
    CREATE TABLE schedule_cursor (node_id TEXT PRIMARY KEY, seq BIGINT NOT NULL);
    CREATE TABLE stop_presence (
        trip_id TEXT NOT NULL, stop_id TEXT NOT NULL, node_id TEXT NOT NULL, arrived_at DOUBLE PRECISION NOT NULL,
        left_at DOUBLE PRECISION, PRIMARY KEY (trip_id, stop_id)
    );
    CREATE TABLE trip_ended (trip_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, state TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
    """,
]

PRODID = "-//CNAP Mobile Office//Public schedule//UK"
PROJECT_LOCK: web.AppKey[asyncio.Lock] = web.AppKey("schedule_lock", asyncio.Lock)


async def create_schema(db: DB) -> None:
    await migrate(db, "hq_schedule", MIGRATIONS)


async def project(db: DB) -> int:
    """Fold the vans' trip events not seen yet into ``stop_presence`` / ``trip_ended``; idempotent per event."""

    async def fold(node_id: str, doc: dict[str, Any]) -> bool:
        if doc.get("type") != "trip" or not isinstance(doc.get("at"), (int, float)):
            return False
        trip_id, ev, at = str(doc.get("id", "")), doc.get("event"), float(doc["at"])
        raw = doc.get("stop")
        stop: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if ev == "at_stop":
            await db.execute(
                "INSERT INTO stop_presence(trip_id, stop_id, node_id, arrived_at) VALUES (?, ?, ?, ?) ON CONFLICT (trip_id, stop_id) DO NOTHING",
                (trip_id, str(stop.get("id", "")), node_id, at))
        elif ev == "left_stop":
            await db.execute("UPDATE stop_presence SET left_at = ? WHERE trip_id = ? AND stop_id = ? AND node_id = ? AND left_at IS NULL",
                             (at, trip_id, str(stop.get("id", "")), node_id))
        elif ev in ("returned", "cancelled"):
            await db.execute("INSERT INTO trip_ended(trip_id, node_id, state, at) VALUES (?, ?, ?, ?) ON CONFLICT (trip_id) DO NOTHING",
                             (trip_id, node_id, str(ev), at))
            await db.execute("UPDATE stop_presence SET left_at = ? WHERE trip_id = ? AND node_id = ? AND left_at IS NULL", (at, trip_id, node_id))
        else:
            return False
        return True

    return await fold_events(db, "schedule_cursor", fold)


def _local(day: str, hhmm: str | None, tz: ZoneInfo) -> datetime | None:
    if not hhmm:
        return None
    return datetime.combine(date.fromisoformat(day), time.fromisoformat(hhmm), tz).astimezone(timezone.utc)


async def entries(db: DB, today: date, days: int, tz: ZoneInfo) -> list[dict[str, Any]]:
    """The published stops from ``today`` for ``days`` days, in date and time order, with the coarse "here now"."""
    last = (today + timedelta(days=days - 1)).isoformat()
    async with db.execute(
        "SELECT p.trip_id, p.node_id, p.planned_date, p.stops, p.created, p.presence_public, e.state FROM trip_plans p"
        " LEFT JOIN trip_ended e ON e.trip_id = p.trip_id"
        " WHERE p.kind = 'van' AND p.planned_date >= ? AND p.planned_date <= ? ORDER BY p.planned_date, p.created",
        (today.isoformat(), last),
    ) as cur:
        plans = [tuple(r) for r in await cur.fetchall()]
    async with db.execute(
        "SELECT s.trip_id, s.stop_id FROM stop_presence s JOIN trip_plans p ON p.trip_id = s.trip_id AND p.node_id = s.node_id"
        " WHERE s.left_at IS NULL AND p.planned_date = ?", (today.isoformat(),)
    ) as cur:
        here = {(str(r[0]), str(r[1])) for r in await cur.fetchall()}
    out: list[dict[str, Any]] = []
    for trip_id, node_id, day, stops_json, created, presence, ended in plans:
        if ended == "cancelled":
            continue
        for i, s in enumerate(json.loads(stops_json), 1):
            purpose = str(s.get("purpose") or "other")
            if purpose == "home":
                continue  # a home visit's address is a person's home: never published
            start, end = _local(day, s.get("from"), tz), _local(day, s.get("to"), tz)
            stop_id = f"{trip_id}-{i}"  # the van numbers a plan's stops the same way (edge/trips/lifecycle.py)
            out.append({"uid": f"{stop_id}@mobile-office", "van": node_id, "date": day, "from": s.get("from"), "to": s.get("to"),
                        "start": start.isoformat() if start else None, "end": end.isoformat() if end else None,
                        "place": s.get("place"), "name": str(s.get("name") or s.get("place") or ""), "lat": s.get("lat"),
                        "lon": s.get("lon"), "purpose": purpose, "purpose_label": PURPOSES.get(purpose, PURPOSES["other"]),
                        "here_now": bool(presence) and ended is None and (trip_id, stop_id) in here, "created": float(created)})
    out.sort(key=lambda e: (e["date"], e["from"] or "", e["van"]))
    return out


# -- iCalendar (RFC 5545) -------------------------------------------------------
def ical_escape(text: str) -> str:
    """TEXT value escaping (RFC 5545 3.3.11): backslash, semicolon, comma, newline."""
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\r\n", "\\n").replace("\n", "\\n")


def fold_line(line: str) -> str:
    """Lines longer than 75 octets are folded (RFC 5545 3.1), never inside a UTF-8 character."""
    out, cur, size = [], "", 0
    for ch in line:
        n = len(ch.encode())
        if size + n > 75:
            out.append(cur)
            cur, size = " ", 1  # a continuation line starts with one space, which counts
        cur += ch
        size += n
    out.append(cur)
    return "\r\n".join(out)


def _utc(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def ical(items: list[dict[str, Any]], now: float) -> str:
    """One VEVENT per published stop; a stop without a time window is an all-day event."""
    stamp = _utc(datetime.fromtimestamp(now, timezone.utc))
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{PRODID}", "CALSCALE:GREGORIAN", "METHOD:PUBLISH",
             "X-WR-CALNAME:" + ical_escape("Мобільні офіси ЦНАП: графік виїздів")]
    for e in items:
        day = date.fromisoformat(e["date"])
        lines += ["BEGIN:VEVENT", f"UID:{e['uid']}", f"DTSTAMP:{stamp}"]
        if e["start"]:
            start = datetime.fromisoformat(e["start"])
            end = datetime.fromisoformat(e["end"]) if e["end"] and e["end"] > e["start"] else start + timedelta(hours=1)
            lines += [f"DTSTART:{_utc(start)}", f"DTEND:{_utc(end)}"]
        else:
            lines += [f"DTSTART;VALUE=DATE:{day:%Y%m%d}", f"DTEND;VALUE=DATE:{day + timedelta(days=1):%Y%m%d}"]
        lines += ["SUMMARY:" + ical_escape(f"Мобільний офіс ЦНАП: {e['purpose_label']}"), "LOCATION:" + ical_escape(e["name"])]
        if e["lat"] is not None and e["lon"] is not None:
            lines.append(f"GEO:{float(e['lat']):.6f};{float(e['lon']):.6f}")
        lines += ["DESCRIPTION:" + ical_escape(f"{e['purpose_label']}. {e['name']}"), "STATUS:CONFIRMED", "TRANSP:TRANSPARENT", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "".join(fold_line(line) + "\r\n" for line in lines)


# -- web ------------------------------------------------------------------------
PUBLIC_KEYS = ("uid", "date", "from", "to", "start", "end", "place", "name", "lat", "lon", "purpose", "purpose_label", "here_now")


async def _entries(request: web.Request) -> list[dict[str, Any]]:
    app, cfg = request.app, request.app[CONFIG]
    db = app[STORE].db
    async with app[PROJECT_LOCK]:  # one fold at a time; each only reads what arrived since the last
        await project(db)
    tz = ZoneInfo(cfg.schedule_timezone)
    today = datetime.fromtimestamp(cfg.clock.now(), tz).date()
    return await entries(db, today, cfg.schedule_days, tz)


async def schedule_page(request: web.Request) -> web.Response:
    items = await _entries(request)
    days: dict[str, list[dict[str, Any]]] = {}
    for e in items:
        days.setdefault(e["date"], []).append(e)
    return await page(request, "public_schedule.html", {"days": days, "session": None, "purposes": PURPOSES})


async def schedule_json(request: web.Request) -> web.Response:
    items = await _entries(request)
    return json_response({"version": 1, "timezone": request.app[CONFIG].schedule_timezone,
                          "stops": [{k: e[k] for k in PUBLIC_KEYS} | {"van": e["van"]} for e in items]})


async def schedule_ics(request: web.Request) -> web.Response:
    items = await _entries(request)
    body = ical(items, request.app[CONFIG].clock.now())
    return web.Response(body=body.encode(), content_type="text/calendar", charset="utf-8",
                        headers={"Content-Disposition": 'inline; filename="schedule.ics"'})


async def _schema_ctx(app: web.Application) -> AsyncIterator[None]:
    await create_schema(app[STORE].db)
    yield


PUBLIC_PATHS = ("/public/schedule", "/public/schedule.ics", "/public/schedule.json")


def add_routes(app: web.Application) -> None:
    """Public routes: no session, nothing personal (see the module doc)."""
    app[PROJECT_LOCK] = asyncio.Lock()
    app.cleanup_ctx.append(_schema_ctx)
    app.router.add_get("/public/schedule", schedule_page)
    app.router.add_get("/public/schedule.ics", schedule_ics)
    app.router.add_get("/public/schedule.json", schedule_json)
