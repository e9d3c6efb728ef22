"""Fleet figures for the dashboard: alerts, tracks, and a map drawn without tiles.

Alerts are pure functions of the stored state and an injected "now", so a
test decides the time.  Every figure is "as of" the time the van's data
describes; a late batch fills history but cannot make a van look alive.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from sync.errors import EnvelopeError
from sync.poscodec import unpack_position

from .i18n import translator
from .store import HQStore

SILENT_AFTER = 30 * 60.0  # seconds without any message
NEW_INSTANCE_ALERT = 7 * 86400.0  # a van that started a new database is flagged this long
BACKLOG_RECORDS = 200  # records waiting on the van


@dataclass(frozen=True)
class Alert:
    node_id: str
    code: str  # silent, backlog, forged, audit_chain, quarantine, new_instance, conflict
    message: str  # for the dispatcher, in the page's language (Ukrainian unless asked)


def alerts_for(node: dict[str, Any], now: float, rejected: int, audit_breaks: int, quarantined: int,
               new_instance_at: float | None = None, conflicts: int = 0, lang: str = "uk") -> list[Alert]:
    t = translator(lang)
    out = []
    nid = node["node_id"]
    last = node.get("last_seen")
    if last is None or now - float(last) > SILENT_AFTER:
        mins = t("alert.never") if last is None else t("alert.minutes_ago").format(n=f"{(now - float(last)) / 60:.0f}")
        out.append(Alert(nid, "silent", t("alert.silent").format(when=mins)))
    depth = node.get("outbox_depth") or {}
    waiting = int(depth.get("rec", 0))
    if waiting > BACKLOG_RECORDS:
        out.append(Alert(nid, "backlog", t("alert.backlog").format(n=waiting)))
    if rejected:
        out.append(Alert(nid, "forged", t("alert.forged").format(n=rejected)))
    if audit_breaks:
        out.append(Alert(nid, "audit_chain", t("alert.audit_chain")))
    if quarantined:
        out.append(Alert(nid, "quarantine", t("alert.quarantine").format(n=quarantined)))
    if new_instance_at is not None and now - new_instance_at <= NEW_INSTANCE_ALERT:
        out.append(Alert(nid, "new_instance", t("alert.new_instance")))
    if conflicts:
        out.append(Alert(nid, "conflict", t("alert.conflict").format(n=conflicts)))
    return out


async def _counts(store: HQStore, sql: str) -> dict[str, int]:
    async with store.db.execute(sql) as cur:
        return {str(r[0]): int(r[1]) async for r in cur}


async def fleet_view(store: HQStore, now: float, lang: str = "uk") -> dict[str, Any]:
    nodes = await store.fleet()
    rejected = await _counts(store, "SELECT claimed_node, COUNT(*) FROM rejections GROUP BY claimed_node")
    breaks = await _counts(store, "SELECT node_id, COUNT(*) FROM audit_alerts GROUP BY node_id")
    quarantined = await _counts(store, "SELECT node_id, COUNT(*) FROM quarantine GROUP BY node_id")
    conflicts = await _counts(store, "SELECT node_id, COUNT(*) FROM item_conflicts GROUP BY node_id")
    async with store.db.execute("SELECT node_id, MAX(first_seen) FROM node_instances WHERE ordinal > 0 GROUP BY node_id") as cur:
        new_instance = {str(r[0]): float(r[1]) async for r in cur}
    alerts = [a for n in nodes for a in alerts_for(n, now, rejected.get(n["node_id"], 0), breaks.get(n["node_id"], 0),
                                                      quarantined.get(n["node_id"], 0), new_instance.get(n["node_id"]),
                                                      conflicts.get(n["node_id"], 0), lang)]
    return {"nodes": nodes, "alerts": [a.__dict__ for a in alerts], "now": now}


async def track(store: HQStore, node_id: str, since: float, limit: int = 5000) -> list[tuple[float, float, float]]:
    """(time, lat, lon) of a van since a time, in GPS-time order (late batches land in their place)."""
    points = []
    async with store.db.execute(
        "SELECT payload FROM items WHERE node_id = ? AND stream = 'pos' ORDER BY seq DESC LIMIT ?", (node_id, limit)
    ) as cur:
        async for (payload,) in cur:
            if not payload:
                continue  # thinned on the van
            try:
                p = unpack_position(bytes(payload))
            except EnvelopeError:
                continue
            if p.time >= since:
                points.append((p.time, p.lat, p.lon))
    return sorted(points)


def svg_map(tracks: dict[str, list[tuple[float, float, float]]], vans: list[dict[str, Any]], width: int = 640, height: int = 420,
            lang: str = "uk") -> str:
    """An equirectangular sketch of tracks and last positions: works with no tile server at all."""
    say = translator(lang)
    none_label, map_label = _esc(say("fleet.map_none")), _esc(say("fleet.map_name"))
    pts = [(lat, lon) for t in tracks.values() for _, lat, lon in t] + [(v["lat"], v["lon"]) for v in vans if v.get("lat") is not None]
    if not pts:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{none_label}"></svg>'
    lat0, lat1 = min(p[0] for p in pts), max(p[0] for p in pts)
    lon0, lon1 = min(p[1] for p in pts), max(p[1] for p in pts)
    k = math.cos(math.radians((lat0 + lat1) / 2))
    span = max((lon1 - lon0) * k, lat1 - lat0, 0.01) * 1.15
    cx, cy = (lon0 + lon1) / 2, (lat0 + lat1) / 2

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return (width / 2 + (lon - cx) * k / span * width * 0.95, height / 2 - (lat - cy) / span * height * 0.95)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{map_label}">',
             f'<rect width="{width}" height="{height}" fill="#f4f7f9" stroke="#9ab"/>']
    for nid, t in tracks.items():
        if len(t) > 1:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(lat, lon) for _, lat, lon in t))
            parts.append(f'<polyline points="{d}" fill="none" stroke="#00577a" stroke-width="2" opacity="0.7"><title>{_esc(nid)}</title></polyline>')
    for v in vans:
        if v.get("lat") is None:
            continue
        x, y = xy(v["lat"], v["lon"])
        color = "#1b5e20" if v.get("status") == "online" else "#a4001c"
        as_of = " · " + say("fleet.map_as_of").format(when=_as_of(v["position_time"])) if v.get("position_time") else ""
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="{color}"><title>{_esc(v["node_id"])}{as_of}</title></circle>')
        parts.append(f'<text x="{x + 9:.1f}" y="{y + 4:.1f}" font-size="13">{_esc(v["node_id"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _as_of(ts: float) -> str:
    """The van's own time of a figure, as the dashboard prints times."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(float(ts), timezone.utc).astimezone().strftime("%d.%m.%Y %H:%M:%S")


def _esc(s: object) -> str:
    return json.dumps(str(s))[1:-1].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def map_data(tracks: dict[str, list[tuple[float, float, float]]], vans: list[dict[str, Any]]) -> dict[str, Any]:
    """The same figures as the SVG sketch, for the Leaflet map when a tile server is configured."""
    return {
        "tracks": {nid: [[lat, lon] for _, lat, lon in t] for nid, t in tracks.items() if t},
        "vans": [{"node_id": v["node_id"], "lat": v["lat"], "lon": v["lon"], "status": v.get("status"), "as_of": v.get("position_time")}
                 for v in vans if v.get("lat") is not None],
    }
