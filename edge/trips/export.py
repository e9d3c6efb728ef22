"""A trip as GPX 1.1, GeoJSON, and an SVG drawing that needs no map tiles (the van is often offline)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import escape

from .track import Point, Stop


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def gpx(points: list[Point], stops: list[Stop], name: str, names: dict[str, str] | None = None) -> str:
    names = names or {}
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<gpx version="1.1" creator="mobile-office" xmlns="http://www.topografix.com/GPX/1/1">',
           f"<metadata><name>{escape(name)}</name></metadata>"]
    for s in stops:
        label = names.get(s.place or "", "Незапланована зупинка")
        out.append(f'<wpt lat="{s.lat:.7f}" lon="{s.lon:.7f}"><time>{_iso(s.arrival)}</time><name>{escape(label)}</name>'
                   f"<desc>{escape(_iso(s.arrival))} – {escape(_iso(s.departure))}</desc></wpt>")
    out.append(f"<trk><name>{escape(name)}</name><trkseg>")
    out += [f'<trkpt lat="{p.lat:.7f}" lon="{p.lon:.7f}"><time>{_iso(p.t)}</time></trkpt>' for p in points]
    out.append("</trkseg></trk></gpx>")
    return "\n".join(out) + "\n"


def geojson(points: list[Point], stops: list[Stop], names: dict[str, str] | None = None) -> dict[str, Any]:
    names = names or {}
    features: list[dict[str, Any]] = [{
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[round(p.lon, 7), round(p.lat, 7)] for p in points]},
        "properties": {"kind": "track", "start": _iso(points[0].t) if points else None, "end": _iso(points[-1].t) if points else None},
    }]
    for s in stops:
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(s.lon, 7), round(s.lat, 7)]},
                         "properties": {"kind": "stop", "place": s.place, "name": names.get(s.place or "", "Незапланована зупинка"),
                                        "arrival": _iso(s.arrival), "departure": _iso(s.departure)}})
    return {"type": "FeatureCollection", "features": features}


def svg(points: list[Point], stops: list[Stop], names: dict[str, str] | None = None, width: int = 640, height: int = 420) -> str:
    names = names or {}
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="Маршруту ще немає"></svg>'
    lat0, lat1 = min(p.lat for p in points), max(p.lat for p in points)
    lon0, lon1 = min(p.lon for p in points), max(p.lon for p in points)
    k = math.cos(math.radians((lat0 + lat1) / 2))
    span = max((lon1 - lon0) * k, lat1 - lat0, 0.005) * 1.15
    cx, cy = (lon0 + lon1) / 2, (lat0 + lat1) / 2

    def xy(lat: float, lon: float) -> str:
        return f"{width / 2 + (lon - cx) * k / span * width * 0.95:.1f},{height / 2 - (lat - cy) / span * height * 0.95:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="Маршрут виїзду">',
             f'<rect width="{width}" height="{height}" fill="#f4f7f9" stroke="#9ab"/>',
             f'<polyline points="{" ".join(xy(p.lat, p.lon) for p in points)}" fill="none" stroke="#00577a" stroke-width="3"/>']
    for i, s in enumerate(stops, 1):
        x, y = xy(s.lat, s.lon).split(",")
        label = names.get(s.place or "", "Незапланована зупинка")
        parts.append(f'<circle cx="{x}" cy="{y}" r="8" fill="#a4001c"><title>{escape(label)}</title></circle>'
                     f'<text x="{float(x) + 10:.1f}" y="{float(y) + 5:.1f}" font-size="14">{i}</text>')
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["Point", "Stop", "geojson", "gpx", "svg"]
