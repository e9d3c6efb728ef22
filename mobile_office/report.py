"""`mobile-office report`: the department's numbers for a period, from a van's data directory or HQ's.

Every figure is defined once in sync/figures.py; the van's tables are read as
its facts by edge/figures.py, HQ's by hq/trips.py.  Nothing here needs the
node key: only non-personal metadata is read.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

from edge import figures as van_figures
from hq import trips as hq_trips

from kit import data_path

T = TypeVar("T")


def _complete(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that awaits nothing but sqlite3 (synchronous) fetches: also from inside a running event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise RuntimeError("the report awaited I/O: give it synchronous fetches")


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def build_hq(data_dir: Path, start: date, end: date) -> dict[str, Any]:
    """HQ's figures for [start, end] across the fleet and per van (hq/trips.py computes them, as the HQ pages do)."""
    t0 = datetime.combine(start, time.min, timezone.utc).timestamp()
    t1 = datetime.combine(end + timedelta(days=1), time.min, timezone.utc).timestamp()
    db = sqlite3.connect(f"file:{data_dir / 'hq.db'}?mode=ro", uri=True)
    try:
        async def fetch(sql: str, params: Any) -> list[tuple[Any, ...]]:
            table = sql.split(" FROM ", 1)[1].split()[0]
            return db.execute(sql, tuple(params)).fetchall() if _table_exists(db, table) else []

        rep = _complete(hq_trips.report(fetch, t0, t1))
    finally:
        db.close()
    return {"period": {"from": start.isoformat(), "to": end.isoformat()}, **rep}


def build(data_dir: Path, start: date, end: date) -> dict[str, Any]:
    """Figures for [start, end] (whole days, UTC), from a van's data directory or HQ's (``hq.db``)."""
    if (data_dir / "hq.db").exists() and not (data_dir / "node.db").exists():
        return build_hq(data_dir, start, end)
    db = sqlite3.connect(f"file:{data_dir / 'node.db'}?mode=ro", uri=True)
    try:
        return _complete(van_figures.report(van_figures.sqlite3_fetch(db), start, end))
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
