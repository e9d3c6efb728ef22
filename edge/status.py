"""The node's status document, shared by the API and the status bar."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kit.tasks import LOOPS
from sync import outbox

from .appkeys import CONFIG, GPS, MODEM, STORE, UPLINK


def _satellite(app: web.Application) -> dict[str, Any] | None:
    manager = app.get(MODEM)
    if manager is None:
        return None
    st = manager.status
    return {"present": st.present, "signal": st.signal, "last_success": st.last_success, "last_error": st.last_error,
            "sessions_ok": st.sessions_ok, "sessions_failed": st.sessions_failed}


async def node_status(app: web.Application) -> dict[str, Any]:
    cfg, store, gps = app[CONFIG], app[STORE], app[GPS]
    uplink = app.get(UPLINK)
    fix = gps.fix
    snap = await outbox.snapshot(store.reader)  # one hop to SQLite's thread: this runs on every page
    summary = await store.outbox_summary(snap)
    return {
        "node_id": cfg.node_id,
        "gps": {
            "state": gps.state.value,
            "mode": fix.mode if fix and gps.state.value == "fix" else (1 if gps.state.value == "no_fix" else 0),
            "lat": fix.lat if fix else None,
            "lon": fix.lon if fix else None,
            "time": fix.time if fix else None,
            "clock_offset": gps.clock_offset,
        },
        "outbox": {
            "pending": summary["pending"],
            "delivered": summary["delivered"],
            "oldest_pending": summary["oldest_pending"],
            "by_stream": summary["by_stream"],
            # per data class: bytes waiting and the limit (records/audit refuse intake past it; GPS thins)
            "usage": snap.usage(store.limits),
            "quarantined": snap.quarantined,
        },
        "link": {
            "mqtt": "up" if uplink is not None and uplink.status.mqtt_up else "down",
            "satellite": _satellite(app),
            "last_ack": summary["last_ack"],
        },
        "store": {"locked": store.locked},
        # source: disciplined | gps | unsynced; offset: true time minus the system clock, seconds (null: unknown)
        "time": store.time.status(),
        # supervised background loops (kit/tasks.py): name -> state, restarts, last error class
        "loops": app[LOOPS].snapshot() if LOOPS in app else {},
    }
