"""`mobile-office report`: the department's numbers for a period, from a van's data directory or HQ's.

Trips are the recorded track split where the van stood still or was off for
more than ``TRIP_GAP`` hours; stops come from the same dwell detection as the
van's live view, named after the planned places (stops.json) within a
geofence.  Nothing here needs the node key: only non-personal metadata is read.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

from hq import trips as hq_trips
from sync.figures import admin_rates
from edge.trips.track import Place, Point, detect_stops, distance_m, match, track

from kit import data_path

TRIP_GAP = 3 * 3600.0


def _places() -> list[Place]:
    doc = json.loads(data_path("stops.json").read_text(encoding="utf-8"))
    return [Place(p["code"], p["name"], p["lat"], p["lon"]) for p in [doc["base"], *doc["stops"], *doc.get("home_visits", [])]]


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def build_hq(data_dir: Path, start: date, end: date) -> dict[str, Any]:
    """HQ's figures for [start, end] across the fleet and per van (hq/trips.py computes them, as the HQ pages do)."""
    t0 = datetime.combine(start, time.min, timezone.utc).timestamp()
    t1 = datetime.combine(end + timedelta(days=1), time.min, timezone.utc).timestamp()
    db = sqlite3.connect(f"file:{data_dir / 'hq.db'}?mode=ro", uri=True)
    try:
        async def fetch(sql: str, params: Any) -> list[tuple[Any, ...]]:
            table = sql.split(" FROM ", 1)[1].split()[0]
            return db.execute(sql, tuple(params)).fetchall() if _table_exists(db, table) else []

        rep = asyncio.run(hq_trips.report(fetch, t0, t1))
    finally:
        db.close()
    return {"period": {"from": start.isoformat(), "to": end.isoformat()}, **rep}


def _lifecycle_trips(db: sqlite3.Connection, t0: float, t1: float, places: dict[str, Place]) -> list[dict[str, Any]]:
    """Trips of the lifecycle (edge/trips/lifecycle.py) that departed in the period, with their stops as recorded."""
    out = []
    for tid, title, dep, ret, km in db.execute(
        "SELECT id, title, departed_at, returned_at, km FROM trips WHERE departed_at >= ? AND departed_at < ? ORDER BY departed_at", (t0, t1)
    ).fetchall():
        if km is None:  # still out: the odometer so far
            km = round(distance_m([Point(t, la / 1e7, lo / 1e7) for t, la, lo in db.execute(
                "SELECT t, lat_e7, lon_e7 FROM track_points WHERE t >= ? ORDER BY t", (dep,))]) / 1000, 2)
        stops = db.execute(
            "SELECT place, name, arrived_at, departed_at, COALESCE(stop_lat, lat), COALESCE(stop_lon, lon) FROM trip_stops"
            " WHERE trip_id = ? AND arrived_at IS NOT NULL ORDER BY arrived_at", (tid,)).fetchall()
        out.append({"id": tid, "title": title, "start": _iso(dep), "end": _iso(ret) if ret is not None else None, "km": km,
                    "stops": [{"place": p or "unplanned", "name": n or (places[p].name if p in places else "Незапланована зупинка"),
                               "arrival": _iso(a), "departure": _iso(d) if d is not None else None, "lat": round(la, 5), "lon": round(lo, 5)}
                              for p, n, a, d, la, lo in stops]})
    return out


def build(data_dir: Path, start: date, end: date) -> dict[str, Any]:
    """Figures for [start, end] (whole days, UTC), from a van's data directory or HQ's (``hq.db``)."""
    if (data_dir / "hq.db").exists() and not (data_dir / "node.db").exists():
        return build_hq(data_dir, start, end)
    t0 = datetime.combine(start, time.min, timezone.utc).timestamp()
    t1 = datetime.combine(end + timedelta(days=1), time.min, timezone.utc).timestamp()
    db = sqlite3.connect(f"file:{data_dir / 'node.db'}?mode=ro", uri=True)
    try:
        pts: list[Point] = []
        if _table_exists(db, "track_points"):
            pts = [Point(t, la / 1e7, lo / 1e7) for t, la, lo in
                   db.execute("SELECT t, lat_e7, lon_e7 FROM track_points WHERE t >= ? AND t < ? ORDER BY t", (t0, t1))]
        trips_pts: list[list[Point]] = []
        for p in pts:
            if not trips_pts or p.t - trips_pts[-1][-1].t > TRIP_GAP:
                trips_pts.append([])
            trips_pts[-1].append(p)
        places = {p.code: p for p in _places()}
        trips: list[dict[str, Any]] = []
        for tp in trips_pts:
            clean_pts = track(tp)
            stops = [match(s, places.values()) for s in detect_stops(clean_pts)]
            stops = [s for s in stops if s.place != "BASE"]
            trips.append({
                "start": _iso(tp[0].t), "end": _iso(tp[-1].t), "km": round(distance_m(clean_pts) / 1000, 2),
                "stops": [{"place": s.place or "unplanned", "name": places[s.place].name if s.place in places else "Незапланована зупинка",
                           "arrival": _iso(s.arrival), "departure": _iso(s.departure), "lat": round(s.lat, 5), "lon": round(s.lon, 5)}
                          for s in stops],
            })
        if _table_exists(db, "trips"):
            lifecycle = _lifecycle_trips(db, t0, t1, places)
            if lifecycle:  # trips the van ran (planned or not) are the department's trips; the track split is the fallback
                trips = lifecycle
        catalog = json.loads(data_path("catalog.json").read_text(encoding="utf-8"))
        category_of = {s["code"]: s["category"] for s in catalog["services"]}
        by_category: dict[str, int] = {}
        citizens = 0
        if _table_exists(db, "applications"):
            for (code,) in db.execute("SELECT service_code FROM applications WHERE created >= ? AND created < ?", (t0, t1)):
                cat = category_of.get(code, "other")
                by_category[cat] = by_category.get(cat, 0) + 1
            # one citizen, several applications (a package): count people by the keyed index, not by plaintext
            citizens = db.execute("SELECT COUNT(DISTINCT rnokpp_index) FROM applications WHERE created >= ? AND created < ?"
                                  " AND rnokpp_index != zeroblob(16)", (t0, t1)).fetchone()[0]
        served = waiting = service = 0.0
        n_served = 0
        per_admin: dict[str, Any] = {}
        if _table_exists(db, "queue_tickets"):
            per_admin = admin_rates(db.execute(
                "SELECT served_by, day, called_at, finished_at FROM queue_tickets WHERE status = 'served' AND created >= ? AND created < ?"
                " AND served_by IS NOT NULL AND called_at IS NOT NULL AND finished_at IS NOT NULL", (t0, t1)).fetchall())
            rows = db.execute("SELECT created, called_at, finished_at FROM queue_tickets WHERE status = 'served' AND created >= ? AND created < ?",
                              (t0, t1)).fetchall()
            n_served = len(rows)
            waiting = sum((c or a) - a for a, c, _ in rows)
            service = sum((f or c or a) - (c or a) for a, c, f in rows)
            served = max(citizens, n_served)
        ratings: dict[str, Any] = {"count": 0, "positive_share": None}
        if _table_exists(db, "ratings"):
            scores = [s for (s,) in db.execute("SELECT score FROM ratings WHERE score IS NOT NULL AND rated_at >= ? AND rated_at < ?", (t0, t1))]
            ratings = {"count": len(scores), "positive_share": round(sum(1 for s in scores if s >= 4) / len(scores), 3) if scores else None}
        visits: dict[str, int] = {}
        if _table_exists(db, "visits"):
            n = db.execute("SELECT COUNT(*) FROM visits WHERE status = 'finished' AND finished_at >= ? AND finished_at < ?", (t0, t1)).fetchone()[0]
            visits = {"finished": n}
        if _table_exists(db, "visit_category_counts"):
            # counted per day when each visit was finished (categories travel sealed; the count keeps no visit id)
            for cat, k in db.execute("SELECT category, SUM(n) FROM visit_category_counts WHERE day >= ? AND day <= ? GROUP BY category",
                                     (start.isoformat(), end.isoformat())):
                visits[cat] = int(k)
        return {
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "trips": len(trips),
            "km": round(sum(t["km"] for t in trips), 2),
            "stops": sum(len(t["stops"]) for t in trips),
            "citizens_served": int(max(served, citizens)),
            "applications_by_category": dict(sorted(by_category.items())),
            "home_visits_by_category": visits,
            "ratings": ratings,
            "workload": {"served_from_queue": n_served,
                         "avg_wait_min": round(waiting / n_served / 60, 1) if n_served else None,
                         "avg_service_min": round(service / n_served / 60, 1) if n_served else None, **per_admin},
            "trip_list": trips,
        }
    finally:
        db.close()


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, ensure_ascii=False, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["metric", "value"])
        for key in ("trips", "km", "stops", "citizens_served"):
            w.writerow([key, report[key]])
        for cat, n in report["applications_by_category"].items():
            w.writerow([f"applications:{cat}", n])
        for cat, n in report["home_visits_by_category"].items():
            w.writerow([f"home_visits:{cat}", n])
        w.writerow(["ratings:count", report["ratings"]["count"]])
        w.writerow(["ratings:positive_share", report["ratings"]["positive_share"]])
        for van, r in report.get("per_van", {}).items():
            for key in ("trips", "km", "stops", "citizens_served"):
                w.writerow([f"{van}:{key}", r[key]])
        w.writerow([])
        w.writerow(["trip_start", "trip_end", "place", "arrival", "departure", "lat", "lon"] + (["node_id"] if "per_van" in report else []))
        for t in report["trip_list"]:
            for s in t["stops"] or [{}]:
                w.writerow([t["start"], t["end"], s.get("place", ""), s.get("arrival", ""), s.get("departure", ""), s.get("lat", ""), s.get("lon", "")]
                           + ([t["node_id"]] if "per_van" in report else []))
        return out.getvalue()
    lines = [f"# Звіт мобільного офісу: {report['period']['from']} — {report['period']['to']}", "",
             f"- Виїздів: {report['trips']}", f"- Кілометрів: {report['km']}", f"- Зупинок: {report['stops']}",
             f"- Обслуговано громадян: {report['citizens_served']}",
             f"- Оцінок: {report['ratings']['count']}, позитивних: {_share(report['ratings']['positive_share'])}", "",
             "| категорія послуг | заяв |", "|---|---|"]
    lines += [f"| {c} | {n} |" for c, n in report["applications_by_category"].items()]
    lines += ["", "| домашні візити | кількість |", "|---|---|"]
    labels = _category_labels()
    lines += [f"| {labels.get(c, c)} | {n} |" for c, n in report["home_visits_by_category"].items()]
    if "per_van" in report:
        lines += ["", "| фургон | виїздів | км | зупинок | громадян |", "|---|---|---|---|---|"]
        lines += [f"| {v} | {r['trips']} | {r['km']} | {r['stops']} | {r['citizens_served']} |" for v, r in report["per_van"].items()]
    lines += ["", "| виїзд | місце | прибуття | відбуття |", "|---|---|---|---|"]
    lines += [f"| {t['start'][:10]} | {s['name']} | {(s['arrival'] or '')[11:16]} | {(s['departure'] or '…')[11:16]} |" for t in report["trip_list"] for s in t["stops"]]
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    """A share for people: "83 %", or a dash when there is nothing to count (never "None")."""
    return "—" if value is None else f"{value * 100:.0f} %"


def _category_labels() -> dict[str, str]:
    doc = json.loads(data_path("citizen_categories.json").read_text(encoding="utf-8"))
    # The van only counts finished visits: their categories travel sealed and HQ reports the breakdown.
    return {"finished": "завершено (категорії — у звіті ЦНАП)", **{c["code"]: c["name"] for c in doc["categories"]}}
