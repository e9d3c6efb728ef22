"""Department figures computed the same way from the van's tables and from HQ's copy of the vans' events.

Both ends of the protocol count from the facts the van sends (tickets, trips,
ratings); this module is where each figure is defined once.
"""

from __future__ import annotations

from typing import Any


def admin_rates(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Citizens per administrator per hour: tickets served / hours from their first call to their last finish, day by day.

    Rows: (administrator, day, called_at, finished_at) of served tickets.  Shared with HQ (from its queue events).
    """
    spans: dict[tuple[str, str], list[float]] = {}
    for who, day, called, finished in rows:
        s = spans.setdefault((str(who), str(day)), [float(called), float(finished), 0])
        s[0], s[1], s[2] = min(s[0], float(called)), max(s[1], float(finished)), s[2] + 1
    admins: dict[str, dict[str, Any]] = {}
    for (who, _day), (a, b, n) in spans.items():
        r = admins.setdefault(who, {"served": 0, "hours": 0.0})
        r["served"] += int(n)
        r["hours"] += max(b - a, 300.0) / 3600  # one quick ticket is not a 0-hour shift: at least 5 minutes
    hours = sum(r["hours"] for r in admins.values())
    for r in admins.values():
        r["per_hour"] = round(r["served"] / r["hours"], 1)
        r["hours"] = round(r["hours"], 2)
    return {"citizens_per_admin_hour": round(sum(r["served"] for r in admins.values()) / hours, 1) if hours else None,
            "per_admin": dict(sorted(admins.items()))}
