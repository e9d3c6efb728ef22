"""The department's programme indicators at HQ: a page with charts, CSV and JSON (issue 19 item 3).

Definitions live once in ``sync/figures.py`` (``indicators``); this module
reads HQ's rows into its plain facts, per period, van and service, and draws
the charts as server-side SVG (no script, no external request).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timezone
from typing import Any

from aiohttp import web
from markupsafe import Markup

from kit.web import json_response
from sync import figures

from . import catalog_admin, projections, trips
from .appkeys import CONFIG, STORE
from .pages import language, page, session
from .i18n import translator

Row = tuple[Any, ...]


async def _rows(db: Any, sql: str, params: Sequence[Any]) -> list[Row]:
    async with db.execute(sql, tuple(params)) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def facts(db: Any, t0: float, t1: float) -> tuple[list[figures.Decision], dict[str, list[figures.Opinion]]]:
    """The period's applications with their result (first ready or refused), and the period's ratings by van."""
    records = await _rows(db, "SELECT record_id, node_id, service_code, created FROM records WHERE created >= ? AND created < ?", (t0, t1))
    edits = await _rows(db, "SELECT e.record_id, e.status, e.at FROM status_edits e JOIN records r ON r.record_id = e.record_id"
                            " WHERE r.created >= ? AND r.created < ? AND e.status IN ('ready', 'refused') ORDER BY e.at", (t0, t1))
    first: dict[str, tuple[float, bool]] = {}
    refused: set[str] = set()
    for rid, status, at in edits:
        first.setdefault(str(rid), (float(at), status == "refused"))
        if status == "refused":
            refused.add(str(rid))
    decisions = [figures.Decision(str(node), str(code), float(created), first.get(str(rid), (None, False))[0], str(rid) in refused)
                 for rid, node, code, created in records]
    opinions: dict[str, list[figures.Opinion]] = {}
    for node, score, at, commented in await _rows(
            db, "SELECT node_id, score, at, CASE WHEN comment_sealed IS NULL OR comment_sealed = '' THEN 0 ELSE 1 END"
                " FROM ratings WHERE at >= ? AND at < ?", (t0, t1)):
        opinions.setdefault(str(node), []).append(figures.Opinion(int(score), float(at), bool(commented)))
    return decisions, opinions


def _months(d0: date, d1: date) -> list[tuple[str, float, float]]:
    out, y, m = [], d0.year, d0.month
    while (y, m) <= (d1.year, d1.month):
        start = datetime(y, m, 1, tzinfo=timezone.utc)
        y2, m2 = (y + 1, 1) if m == 12 else (y, m + 1)
        out.append((f"{y:04d}-{m:02d}", start.timestamp(), datetime(y2, m2, 1, tzinfo=timezone.utc).timestamp()))
        y, m = y2, m2
    return out


async def build(db: Any, d0: date, d1: date, t0: float, t1: float, now: float, node_id: str = "", service: str = "") -> dict[str, Any]:
    """Fleet, per-van and month-by-month indicators for [t0, t1), optionally for one van and/or one service."""
    catalogue = {s["code"]: s for s in (await catalog_admin.current(db))["doc"]["services"]}
    decisions, opinions = await facts(db, t0, t1)
    await projections.project(db)
    dept = await trips.report(lambda sql, params: _rows(db, sql, params), t0, t1, projections.EVENTS_SQL)
    if service:
        decisions = [d for d in decisions if d.service_code == service]
    vans = sorted({*dept["per_van"], *(d.node_id for d in decisions), *opinions})
    if node_id:
        vans = [v for v in vans if v == node_id]

    def scope(nodes: Iterable[str]) -> dict[str, Any]:
        nodes = set(nodes)
        mine = [d for d in decisions if d.node_id in nodes]
        ops = [o for n in nodes for o in opinions.get(n, [])]
        served = sum(dept["per_van"].get(n, {}).get("citizens_served", 0) for n in nodes)
        cats: dict[str, int] = {}
        for n in nodes:
            for c, k in dept["per_van"].get(n, {}).get("home_visits_by_category", {}).items():
                cats[c] = cats.get(c, 0) + k
        return figures.indicators(mine, ops, served, cats, catalogue, t0, t1, now)

    months = []
    for label, m0, m1 in _months(d0, d1):
        ind = figures.indicators([d for d in decisions if d.node_id in vans], [o for n in vans for o in opinions.get(n, [])], 0, {},
                                 catalogue, max(m0, t0), min(m1, t1), now)
        months.append({"month": label, "applications": ind["applications"], "refusals": ind["refusals"], "complaints": ind["complaints"],
                       "beyond_term": ind["beyond_term"] + ind["overdue"]})
    return {"period": {"from": d0.isoformat(), "to": d1.isoformat()}, "node_id": node_id or None, "service": service or None,
            "fleet": scope(vans), "per_van": {v: scope([v]) for v in vans}, "months": months,
            "services": {c: e.get("name", c) for c, e in catalogue.items()}}


# -- charts ---------------------------------------------------------------------
COLOURS = ("#00577a", "#a4001c", "#8a5a00", "#1b5e20")


def bar_chart(title: str, rows: list[tuple[str, list[float]]], series: list[str], width: int = 560) -> Markup:
    """Horizontal grouped bars as inline SVG, with a title and a text alternative (the table beside it says the same)."""
    bar_h, gap, label_w = 14, 10, 150
    top = 24 + 18 * len(series)
    height = top + len(rows) * (bar_h * len(series) + gap) + 8
    peak = max([v for _, vals in rows for v in vals] + [1])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>']
    for i, name in enumerate(series):
        parts.append(f'<rect x="{label_w}" y="{6 + 18 * i}" width="12" height="12" fill="{COLOURS[i % 4]}"/>'
                     f'<text x="{label_w + 18}" y="{16 + 18 * i}" font-size="12">{html.escape(name)}</text>')
    y = top
    for label, vals in rows:
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h * len(series) / 2 + 4:.0f}" font-size="12" text-anchor="end">'
                     f'{html.escape(label[:24])}</text>')
        for i, v in enumerate(vals):
            w = (width - label_w - 50) * v / peak
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{COLOURS[i % 4]}"/>'
                         f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 3}" font-size="11">{v:g}</text>')
            y += bar_h
        y += gap
    parts.append("</svg>")
    return Markup("".join(parts))


def charts(ind: dict[str, Any], labels: dict[str, str], lang: str = "uk") -> dict[str, Markup]:
    t = translator(lang)
    apps, refusals = t("ind.s_applications"), t("ind.s_refusals")
    return {
        "months": bar_chart(t("ind.chart_months"), [(m["month"], [m["applications"], m["refusals"], m["complaints"]])
                                                    for m in ind["months"]], [apps, refusals, t("ind.s_complaints")]),
        "vans": bar_chart(t("ind.chart_vans"), [(n, [r["applications"], r["refusals"]]) for n, r in ind["per_van"].items()],
                          [apps, refusals]),
        "categories": bar_chart(t("ind.cap_categories"),
                                [(labels.get(c, c), [float(n)]) for c, n in ind["fleet"]["home_visits_by_category"].items()], [t("ind.s_visits")]),
    }


# -- CSV --------------------------------------------------------------------------
CSV_COLUMNS = ["from", "to", "node_id", "service_code", "applications", "refusals", "refusal_share", "within_term", "beyond_term",
               "term_unknown", "pending", "overdue", "term_days", "fee", "fees_due", "complaints", "citizens_served", "complaints_per_1000"]


def csv_text(ind: dict[str, Any]) -> str:
    """One row per van and service, then one summary row per van and for the fleet (``service_code`` ``all``)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    p = ind["period"]
    for node, r in [*ind["per_van"].items(), ("all", ind["fleet"])]:
        for code, s in r["per_service"].items():
            w.writerow([p["from"], p["to"], node, code, *(s[k] for k in CSV_COLUMNS[4:15]), "", "", ""])
        w.writerow([p["from"], p["to"], node, "all", r["applications"], r["refusals"], r["refusal_share"], r["within_term"], r["beyond_term"],
                    r["term_unknown"], r["pending"], r["overdue"], "", "", r["fees_due_total"], r["complaints"], r["citizens_served"],
                    r["complaints_per_1000"]])
    return out.getvalue()


# -- web ------------------------------------------------------------------------
async def _indicators(request: web.Request) -> dict[str, Any]:
    cfg = request.app[CONFIG]
    now = cfg.clock.now()
    d0, d1, t0, t1 = trips.period(request, datetime.fromtimestamp(now, timezone.utc).date())
    return await build(request.app[STORE].db, d0, d1, t0, t1, now, request.query.get("node_id", ""), request.query.get("service", ""))


async def indicators_page(request: web.Request) -> web.Response:
    s = session(request)
    ind = await _indicators(request)
    lang = language(request)
    labels = trips.category_labels(lang)
    ctx = {"session": s, "ind": ind, "charts": charts(ind, labels, lang), "labels": labels, "node_id": request.query.get("node_id", ""),
           "service": request.query.get("service", ""), "nodes": sorted(n["node_id"] for n in await request.app[STORE].fleet())}
    return await page(request, "indicators.html", ctx)


async def indicators_csv(request: web.Request) -> web.Response:
    session(request)
    ind = await _indicators(request)
    name = f"indicators-{ind['period']['from']}-{ind['period']['to']}.csv"
    return web.Response(text=csv_text(ind), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def indicators_json(request: web.Request) -> web.Response:
    session(request)
    return json_response(await _indicators(request))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/indicators", indicators_page)
    app.router.add_get("/indicators.csv", indicators_csv)
    app.router.add_get("/api/v1/indicators", indicators_json)
