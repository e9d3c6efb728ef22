"""Planned trips and their lifecycle on the van: planned → departed → at_stop ⇄ between_stops → returned.

HQ plans a trip (stops with place, position, time window, purpose) and sends
it on the ``assign`` downlink as an item of ``"kind": "trip"`` (positions and
places are not personal data: signed, not sealed).  The administrator starts
and ends it from the trip page, or the GPS does: the recorder hands each
flushed batch of kept points (GPS time, in order) to ``Trips.on_points``,
which leaves the depot, stops, moves on and comes home.  Every transition is
one transaction with its ``evt`` item for HQ.

Every visit, queue ticket, applicant and application is linked to the stop
current when it was created (``trip_links``).  One created in the first
minutes at a place, before the dwell proved it a stop, is attached when the
stop is recognised (its arrival is earlier than the record).  The links also
date the close of each record for retention (``close_sql``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiosqlite

from kit import data_path
from sync import crypto, figures, outbox
from sync.db import transaction
from sync.migrate import migrate

from kit.geo import haversine

from ..store import Store
from ..visits import assignment_context
from .recorder import points  # the odometer over what the recorder stored
from .track import Place, Point, detect_stops, distance_m

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE trips (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL DEFAULT 'van' CHECK (kind IN ('van', 'home_round', 'adhoc')),
        title TEXT NOT NULL DEFAULT '',
        planned_date TEXT,
        assigned_to TEXT,
        state TEXT NOT NULL DEFAULT 'planned'
            CHECK (state IN ('planned', 'departed', 'at_stop', 'between_stops', 'returned', 'cancelled')),
        received REAL NOT NULL,
        departed_at REAL,
        returned_at REAL,
        current_stop TEXT,
        km REAL
    );
    CREATE TABLE trip_stops (
        id TEXT PRIMARY KEY,
        trip_id TEXT NOT NULL REFERENCES trips(id),
        seq INTEGER NOT NULL,
        planned INTEGER NOT NULL,
        place TEXT,
        name TEXT NOT NULL DEFAULT '',
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        window_from TEXT,
        window_to TEXT,
        purpose TEXT,
        arrived_at REAL,
        departed_at REAL,
        stop_lat REAL,
        stop_lon REAL
    );
    CREATE INDEX trip_stops_trip ON trip_stops(trip_id, seq);
    CREATE TABLE trip_links (
        entity TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        at REAL NOT NULL,
        trip_id TEXT,
        stop_id TEXT,
        visit_id TEXT,
        PRIMARY KEY (entity, entity_id)
    ) WITHOUT ROWID;
    CREATE INDEX trip_links_open ON trip_links(stop_id, at);
    CREATE TABLE visit_evidence (
        visit_id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        stop_id TEXT,
        arrival REAL NOT NULL,
        departure REAL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE visit_category_counts (day TEXT NOT NULL, category TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (day, category)) WITHOUT ROWID;
    """,
]

ACTIVE = ("departed", "at_stop", "between_stops")
DEPOT_RADIUS = 300.0  # m around the base: inside it the van is home
DEPOT_DWELL = 120.0  # s inside the depot radius before a trip counts as returned (driving past is not coming home)
STOP_RADIUS = 80.0  # m, as track.detect_stops
STOP_DWELL = 300.0  # s, as track.detect_stops
GEOFENCE = 400.0  # m from a planned stop's position to count as that stop
OPEN = 1e18  # retention anchor of a record whose visit has not closed yet: never expires

# The current trip and stop, in SQL so the synchronous intake path and the async ones link alike.
# A home visit in progress is linked too: what is made during it closes no earlier than its finish.
_LINK_SQL = (
    "INSERT OR IGNORE INTO trip_links(entity, entity_id, at, trip_id, stop_id, visit_id) VALUES (?, ?, ?,"
    " (SELECT id FROM trips WHERE state IN ('departed', 'at_stop', 'between_stops') ORDER BY departed_at DESC LIMIT 1),"
    " (SELECT current_stop FROM trips WHERE state = 'at_stop' ORDER BY departed_at DESC LIMIT 1),"
    " (SELECT id FROM visits WHERE status = 'started' ORDER BY started_at DESC LIMIT 1))"
)


async def create_schema(db: aiosqlite.Connection) -> None:
    await migrate(db, "trips_plan", MIGRATIONS)


def depot() -> Place:
    b = json.loads(data_path("stops.json").read_text(encoding="utf-8"))["base"]
    return Place(b["code"], b["name"], b["lat"], b["lon"])


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).date().isoformat()


class TripError(ValueError):
    """A trip action that cannot be done now; the message is for people."""


@dataclass(frozen=True)
class TripStop:
    id: str
    seq: int
    planned: bool
    place: str | None
    name: str
    lat: float
    lon: float
    window_from: str | None
    window_to: str | None
    purpose: str | None
    arrived_at: float | None
    departed_at: float | None


@dataclass(frozen=True)
class Trip:
    id: str
    kind: str
    title: str
    planned_date: str | None
    assigned_to: str | None
    state: str
    departed_at: float | None
    returned_at: float | None
    current_stop: str | None
    km: float | None
    stops: tuple[TripStop, ...]


class Trips:
    """The van's trips: plans from HQ, the lifecycle, links to stops, home-visit evidence."""

    def __init__(self, store: Store, base: Place | None = None) -> None:
        self.store = store
        self.db = store.db
        self.clock = store.clock
        self.base = base or depot()
        # Online stop detection: the run of points within STOP_RADIUS of its first point (GPS time).
        self._run: list[Point] = []
        self._last_home: float | None = None  # GPS time of the last point inside the depot radius
        self._home_since: float | None = None
        # Whether the running trip has left the depot yet: a trip started by hand in the yard is not "back home".
        self._away: bool | None = None  # None: unknown after a restart

    # -- plans from HQ ----------------------------------------------------------
    async def receive_plan(self, doc: dict[str, Any]) -> None:
        """Downlink handler for an ``assign`` item of kind ``trip``: idempotent (the same id twice changes nothing)."""
        trip_id = str(doc["id"])
        kind = str(doc.get("trip_kind") or "van")
        if kind not in ("van", "home_round"):
            raise ValueError(f"unknown trip kind {kind!r}")
        now = self.clock.now()
        async with transaction(self.db):
            cur = await self.db.execute(
                "INSERT OR IGNORE INTO trips(id, kind, title, planned_date, assigned_to, received) VALUES (?, ?, ?, ?, ?, ?)",
                (trip_id, kind, str(doc.get("title") or "")[:200], doc.get("planned_date"), doc.get("assigned_to"), now),
            )
            if cur.rowcount:
                for i, s in enumerate(doc.get("stops") or [], 1):
                    await self.db.execute(
                        "INSERT INTO trip_stops(id, trip_id, seq, planned, place, name, lat, lon, window_from, window_to, purpose)"
                        " VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
                        (f"{trip_id}-{i}", trip_id, i, s.get("place"), str(s.get("name") or s.get("place") or "")[:200],
                         float(s["lat"]), float(s["lon"]), s.get("from"), s.get("to"), s.get("purpose")),
                    )
        self.store._notify()

    # -- reading ----------------------------------------------------------------
    async def get(self, trip_id: str) -> Trip:
        async with self.db.execute(
            "SELECT id, kind, title, planned_date, assigned_to, state, departed_at, returned_at, current_stop, km FROM trips WHERE id = ?",
            (trip_id,),
        ) as cur:
            r = await cur.fetchone()
        if r is None:
            raise TripError("Виїзд не знайдено")
        async with self.db.execute(
            "SELECT id, seq, planned, place, name, COALESCE(stop_lat, lat), COALESCE(stop_lon, lon), window_from, window_to, purpose,"
            " arrived_at, departed_at FROM trip_stops WHERE trip_id = ? ORDER BY COALESCE(arrived_at, 1e18), seq",
            (trip_id,),
        ) as cur:
            stops = tuple([TripStop(s[0], s[1], bool(s[2]), s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11]) async for s in cur])
        return Trip(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], stops)

    async def for_day(self, day: str) -> list[Trip]:
        t0 = datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp()
        async with self.db.execute(
            "SELECT id FROM trips WHERE planned_date = ? OR (departed_at >= ? AND departed_at < ?) OR state IN ('departed', 'at_stop', 'between_stops')"
            " ORDER BY COALESCE(departed_at, 1e18), received",
            (day, t0, t0 + 86400),
        ) as cur:
            ids = [r[0] async for r in cur]
        return [await self.get(i) for i in ids]

    async def active(self) -> Trip | None:
        async with self.db.execute(
            "SELECT id FROM trips WHERE state IN ('departed', 'at_stop', 'between_stops') ORDER BY departed_at DESC LIMIT 1"
        ) as cur:
            r = await cur.fetchone()
        return None if r is None else await self.get(r[0])

    # -- transitions ------------------------------------------------------------
    async def _emit(self, trip_id: str, event: str, at: float, **extra: Any) -> None:
        item = {"type": "trip", "id": trip_id, "event": event, "at": at, "clock": self.store.time.stamp().wire(), **extra}
        await outbox.enqueue(self.db, "evt", json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode(), self.clock.now())

    async def depart(self, at: float, actor: str | None = None, trip_id: str | None = None) -> str:
        """Start a trip: the given planned one, else the day's first planned trip, else an unplanned one."""
        if await self.active() is not None:
            raise TripError("Попередній виїзд ще не завершено")
        async with transaction(self.db):
            if trip_id is None:
                async with self.db.execute(
                    "SELECT id FROM trips WHERE state = 'planned' AND (planned_date = ? OR planned_date IS NULL) ORDER BY planned_date IS NULL, received LIMIT 1",
                    (_day(at),),
                ) as cur:
                    row = await cur.fetchone()
                if row is None:
                    trip_id = uuid.uuid4().hex
                    await self.db.execute(
                        "INSERT INTO trips(id, kind, title, planned_date, received) VALUES (?, 'adhoc', '', ?, ?)", (trip_id, _day(at), at)
                    )
                else:
                    trip_id = str(row[0])
            cur2 = await self.db.execute(
                "UPDATE trips SET state = 'departed', departed_at = ? WHERE id = ? AND state = 'planned'", (at, trip_id)
            )
            if not cur2.rowcount:
                raise TripError("Цей виїзд не можна розпочати")
            await self._emit(trip_id, "departed", at, by=actor, auto=actor is None)
        self._away = actor is None  # the GPS departs on leaving the depot; a hand start may be in the yard
        self._run = []
        self.store._notify()
        return trip_id

    async def arrive(self, at: float, lat: float, lon: float) -> str | None:
        """The van has stayed at a place: the planned stop within the geofence, else an unplanned one."""
        trip = await self.active()
        if trip is None or trip.state == "at_stop":
            return None
        candidates = [s for s in trip.stops if s.planned and s.arrived_at is None]
        best = min(candidates, key=lambda s: haversine(lat, lon, s.lat, s.lon), default=None)
        async with transaction(self.db):
            if best is not None and haversine(lat, lon, best.lat, best.lon) <= GEOFENCE:
                stop_id, place, name = best.id, best.place, best.name
                await self.db.execute("UPDATE trip_stops SET arrived_at = ?, stop_lat = ?, stop_lon = ? WHERE id = ?", (at, lat, lon, stop_id))
            else:
                stop_id, place, name = f"{trip.id}-u{len(trip.stops) + 1}", None, ""
                await self.db.execute(
                    "INSERT INTO trip_stops(id, trip_id, seq, planned, place, name, lat, lon, arrived_at, stop_lat, stop_lon)"
                    " VALUES (?, ?, ?, 0, NULL, '', ?, ?, ?, ?, ?)",
                    (stop_id, trip.id, len(trip.stops) + 1, lat, lon, at, lat, lon),
                )
            await self.db.execute("UPDATE trips SET state = 'at_stop', current_stop = ? WHERE id = ?", (stop_id, trip.id))
            # What was created here before the dwell proved it a stop belongs to it too.
            await self.db.execute("UPDATE trip_links SET trip_id = ?, stop_id = ? WHERE stop_id IS NULL AND at >= ?", (trip.id, stop_id, at))
            await self._emit(trip.id, "at_stop", at, stop={"id": stop_id, "place": place, "name": name, "lat": round(lat, 6), "lon": round(lon, 6)})
        self.store._notify()
        return stop_id

    async def leave(self, at: float) -> None:
        trip = await self.active()
        if trip is None or trip.state != "at_stop" or trip.current_stop is None:
            return
        async with transaction(self.db):
            await self._close_stop(trip.id, trip.current_stop, at)
            await self.db.execute("UPDATE trips SET state = 'between_stops', current_stop = NULL WHERE id = ?", (trip.id,))
        self.store._notify()

    async def _close_stop(self, trip_id: str, stop_id: str, at: float) -> None:
        await self.db.execute("UPDATE trip_stops SET departed_at = ? WHERE id = ? AND departed_at IS NULL", (at, stop_id))
        # What was done at the stop, for HQ's per-stop view (counts only: the records themselves travel on their own).
        async with self.db.execute("SELECT entity, COUNT(*) FROM trip_links WHERE stop_id = ? GROUP BY entity ORDER BY entity", (stop_id,)) as cur:
            done = {str(e): int(n) for e, n in await cur.fetchall()}
        await self._emit(trip_id, "left_stop", at, stop={"id": stop_id, "records": done})
        # Home visits done at this stop now have their evidence: the stop with its times.
        async with self.db.execute(
            "SELECT l.entity_id FROM trip_links l JOIN visits v ON v.id = l.entity_id"
            " WHERE l.entity = 'visits' AND l.stop_id = ? AND v.status = 'finished'", (stop_id,)
        ) as cur:
            for (vid,) in await cur.fetchall():
                await self._evidence_from_stop(vid, stop_id)

    async def return_(self, at: float, actor: str | None = None, until: float | None = None) -> str | None:
        """End the trip at ``at``; the odometer counts the stored track up to ``until`` (parked by then), default ``at``."""
        trip = await self.active()
        if trip is None:
            if actor is not None:
                raise TripError("Немає виїзду, який можна завершити")
            return None

        dep = trip.departed_at if trip.departed_at is not None else at
        async with self.db.execute("SELECT MAX(returned_at) FROM trips WHERE returned_at <= ?", (dep,)) as cur:
            prev = await cur.fetchone()
        # An automatic departure is dated at the depot's edge: count the metres inside it too,
        # from where the van stood (parked jitter adds nothing), but not the previous trip's way in.
        start = dep - 900 if prev is None or prev[0] is None else max(dep - 900, float(prev[0]) + DEPOT_DWELL)
        km = round(distance_m(await points(self.db, start, (until if until is not None else at) + 1)) / 1000, 2)
        async with transaction(self.db):
            if trip.current_stop is not None:
                await self._close_stop(trip.id, trip.current_stop, at)
            await self.db.execute(
                "UPDATE trips SET state = 'returned', returned_at = ?, current_stop = NULL, km = ? WHERE id = ?", (at, km, trip.id)
            )
            stops = sum(1 for s in trip.stops if s.arrived_at is not None)
            await self._emit(trip.id, "returned", at, by=actor, auto=actor is None, km=km, stops=stops)
        # The next automatic trip begins only after the van has been home (ended by hand far away, it is not leaving the depot).
        self._last_home = None
        self._run = []
        self.store._notify()
        return trip.id

    async def cancel(self, trip_id: str, actor: str) -> None:
        async with transaction(self.db):
            cur = await self.db.execute("UPDATE trips SET state = 'cancelled' WHERE id = ? AND state = 'planned'", (trip_id,))
            if not cur.rowcount:
                raise TripError("Скасувати можна лише запланований виїзд")
            await self._emit(trip_id, "cancelled", self.clock.now(), by=actor)
        self.store._notify()

    # -- from the GPS -----------------------------------------------------------
    async def on_points(self, pts: Sequence[Point]) -> None:
        """Kept points of one recorder flush, in GPS-time order: drive the lifecycle automatically."""
        for p in pts:
            await self._step(p)

    async def _step(self, p: Point) -> None:
        home = haversine(p.lat, p.lon, self.base.lat, self.base.lon) <= DEPOT_RADIUS
        trip = await self.active()
        if home:
            self._last_home = p.t
            self._home_since = self._home_since if self._home_since is not None else p.t
        else:
            self._home_since = None
        if trip is None:
            if not home and self._last_home is not None:
                await self.depart(self._last_home)  # left the depot: the trip began at its edge
                self._run = [p]
            return
        if self._away is None:
            self._away = any(s.arrived_at is not None for s in trip.stops)
        if not home:
            self._away = True
        if home and self._away and self._home_since is not None and p.t - self._home_since >= DEPOT_DWELL:
            if trip.state == "at_stop":
                await self.leave(self._home_since)
            await self.return_(self._home_since, until=p.t)
            self._run = []
            return
        if trip.state == "at_stop":
            stop = next((s for s in trip.stops if s.id == trip.current_stop), None)
            if stop is not None and haversine(stop.lat, stop.lon, p.lat, p.lon) > STOP_RADIUS:
                await self.leave(self._run[-1].t if self._run else p.t)
                self._run = [p]
            else:
                self._run.append(p)
            return
        if self._run and haversine(self._run[0].lat, self._run[0].lon, p.lat, p.lon) <= STOP_RADIUS:
            self._run.append(p)
        else:
            self._run = [p]
        if not home and self._run[-1].t - self._run[0].t >= STOP_DWELL:
            lat = sum(q.lat for q in self._run) / len(self._run)
            lon = sum(q.lon for q in self._run) / len(self._run)
            await self.arrive(self._run[0].t, lat, lon)

    # -- links and evidence -----------------------------------------------------
    def link_sync(self, conn: sqlite3.Connection, entity: str, entity_id: str, at: float) -> None:
        """Inside the intake's one-hop transaction (store._insert_applications)."""
        conn.execute(_LINK_SQL, (entity, entity_id, at))

    async def link(self, entity: str, entity_id: str, at: float) -> None:
        """Inside the caller's transaction: the record and its link commit together."""
        await self.db.execute(_LINK_SQL, (entity, entity_id, at))

    async def stop_of(self, entity: str, entity_id: str) -> tuple[str | None, str | None]:
        async with self.db.execute("SELECT trip_id, stop_id FROM trip_links WHERE entity = ? AND entity_id = ?", (entity, entity_id)) as cur:
            r = await cur.fetchone()
        return (None, None) if r is None else (r[0], r[1])

    @staticmethod
    def close_sql(table: str) -> str:
        """SQL for when ``table``'s row closed, the moment retention counts from.

        The later of: the stop's departure, else the trip's return (a record
        made outside any trip: when made), and the finish of the home visit
        in progress when it was made.  While any of them is open the record
        does not expire.
        """
        assert table.isidentifier()
        return (
            f"COALESCE((SELECT max(CASE WHEN l.trip_id IS NULL THEN l.at ELSE COALESCE(s.departed_at, t.returned_at, {OPEN}) END,"
            f" CASE WHEN l.visit_id IS NULL THEN 0 WHEN v.status = 'finished' THEN v.finished_at WHEN v.status = 'started' THEN {OPEN}"
            f" ELSE l.at END)"
            f" FROM trip_links l LEFT JOIN trip_stops s ON s.id = l.stop_id LEFT JOIN trips t ON t.id = l.trip_id"
            f" LEFT JOIN visits v ON v.id = l.visit_id"
            f" WHERE l.entity = '{table}' AND l.entity_id = {table}.id), {table}.created)"
        )

    async def visit_finished(self, visit_id: str, at: float) -> None:
        """Inside visits.finish's transaction: count the categories (anonymously), and the evidence if the stop is closed."""
        async with self.db.execute("SELECT sealed FROM visits WHERE id = ?", (visit_id,)) as cur:
            row = await cur.fetchone()
        if row is not None and row[0]:  # empty once shredded (HQ's shred command): nothing left to count
            details = json.loads(crypto.unwrap_with_private(bytes(row[0]), self.store.seal_key, assignment_context(self.store.node_id, visit_id)))
            # A per-day count with no visit id: the report's breakdown without a category on anyone's record.
            for cat in figures.visit_categories(details.get("categories")):
                await self.db.execute(
                    "INSERT INTO visit_category_counts(day, category, n) VALUES (?, ?, 1) ON CONFLICT(day, category) DO UPDATE SET n = n + 1",
                    (_day(at), str(cat)),
                )
        _, stop_id = await self.stop_of("visits", visit_id)
        if stop_id is not None:
            async with self.db.execute("SELECT departed_at FROM trip_stops WHERE id = ?", (stop_id,)) as cur:
                s = await cur.fetchone()
            if s is not None and s[0] is not None:
                await self._evidence_from_stop(visit_id, stop_id)
            return
        await self._evidence_from_track(visit_id, at)

    async def _evidence_from_stop(self, visit_id: str, stop_id: str) -> None:
        async with self.db.execute(
            "SELECT arrived_at, departed_at, COALESCE(stop_lat, lat), COALESCE(stop_lon, lon) FROM trip_stops WHERE id = ?", (stop_id,)
        ) as cur:
            s = await cur.fetchone()
        if s is None or s[0] is None:
            return
        await self._write_evidence(visit_id, "stop", stop_id, s[0], s[1], s[2], s[3])

    async def _evidence_from_track(self, visit_id: str, finished: float) -> None:
        """No trip was running: the stored track's stop that covers the visit's start–finish window."""
        async with self.db.execute("SELECT started_at FROM visits WHERE id = ?", (visit_id,)) as cur:
            r = await cur.fetchone()
        started = float(r[0]) if r and r[0] is not None else finished

        best = None
        for s in detect_stops(await points(self.db, started - 3 * 3600, finished + 1)):
            overlap = min(s.departure, finished) - max(s.arrival, started)
            if s.arrival <= finished and (best is None or overlap > best[0]):
                best = (overlap, s)
        if best is not None:
            s = best[1]
            await self._write_evidence(visit_id, "track", None, s.arrival, s.departure, s.lat, s.lon)

    async def _write_evidence(self, visit_id: str, source: str, stop_id: str | None, arrival: float, departure: float | None,
                              lat: float, lon: float) -> None:
        cur = await self.db.execute(
            "INSERT OR IGNORE INTO visit_evidence(visit_id, source, stop_id, arrival, departure, lat, lon, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (visit_id, source, stop_id, arrival, departure, lat, lon, self.clock.now()),
        )
        if cur.rowcount:
            # Where the van stood is where the person lives: the point travels sealed to HQ, like records.
            point = json.dumps({"lat": round(lat, 6), "lon": round(lon, 6)}).encode()
            sealed = crypto.wrap_to_public(point, self.store.hq_seal_public, crypto.evidence_context(self.store.node_id, visit_id))
            item = {"type": "visit_evidence", "id": visit_id, "source": source, "arrival": arrival, "departure": departure,
                    "point_sealed": sealed.hex(), "clock": self.store.time.stamp().wire()}
            await outbox.enqueue(self.db, "evt", json.dumps(item, separators=(",", ":")).encode(), self.clock.now())

    async def evidence(self, visit_id: str) -> dict[str, Any] | None:
        async with self.db.execute(
            "SELECT source, stop_id, arrival, departure, lat, lon FROM visit_evidence WHERE visit_id = ?", (visit_id,)
        ) as cur:
            r = await cur.fetchone()
        if r is None:
            return None
        return {"source": r[0], "stop_id": r[1], "arrival": r[2], "departure": r[3], "lat": r[4], "lon": r[5]}
