"""The department's figures, each defined once, over the facts the van sends to HQ.

Both ends count from the same facts: the van from its own tables, HQ from
its copy of what the van sent (``rec`` applications and ratings, ``evt``
trip / queue / visit events).  Each end adapts its storage into the plain
facts below (``edge/figures.py`` for the van, ``hq/trips.py`` for HQ) and
calls ``department`` (one van) or ``fleet`` (several); nothing here reads a
database.

Which instant puts a fact into a period [t0, t1):

* a trip: its departure; its kilometres are the odometer the van reports on
  return (a trip still out adds 0 km until then: HQ cannot know more);
* an application: its creation;
* a queue ticket: its issue (waiting and service time belong to that day);
* a rating: when the citizen rated;
* a home visit: its finish.

**Citizens served** (``citizens``): the people served in the period, each
person counted once per van and day.  HQ has no РНОКПП, and the van must not
send anything derived from it (a keyed hash of a РНОКПП stays testable by
whoever holds the key, even after the van shreds its copy).  So the van
numbers the people it serves each day: the first application of a person
(same РНОКПП, found by the van's keyed index) on a UTC day gets the next
number of that day, ``YYYYMMDD-N``, and the person's other applications that
day carry the same number.  The number travels in clear metadata
(``citizen``) with the application; it is derived from nothing personal and
is meaningless outside the van and day.  Applications without it (made
before it existed) count one person per intake: the applications made at one
instant (a package) are one person.  A person served from the queue without
an application (a consultation) is in no application, so the figure is the
larger of the people counted from applications and the queue tickets
served; adding them would count most people twice.  Across the fleet the
vans' figures add up (a person's number is per van).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from kit import data_path

MIN_SHIFT_S = 300.0  # one quick ticket is not a 0-hour shift: at least 5 minutes a day
POSITIVE = 4  # a rating of 4 or 5 of 5 is positive


@dataclass(frozen=True)
class Trip:
    departed: float
    km: float | None  # reported on return; None while the trip is out
    stops: int  # stops the van arrived at


@dataclass(frozen=True)
class Application:
    service_code: str
    created: float
    package: str | None = None
    citizen: str | None = None  # the van's per-day number of the person (see the module doc)


@dataclass(frozen=True)
class Ticket:
    issued: float
    called: float | None
    finished: float | None
    served: bool
    by: str | None  # the administrator who called it


@dataclass(frozen=True)
class Rating:
    score: int
    at: float


@dataclass
class Facts:
    """One van's facts (those outside the period are ignored by ``department``).

    Home visits: ``visits`` are the finish instants; ``visit_categories`` the
    counts by category of the visits finished in the period (the van counts
    them when a visit finishes, HQ from its plans: see ``visit_categories``).
    """

    trips: list[Trip] = field(default_factory=list)
    applications: list[Application] = field(default_factory=list)
    tickets: list[Ticket] = field(default_factory=list)
    ratings: list[Rating] = field(default_factory=list)
    visits: list[float] = field(default_factory=list)
    visit_category_counts: dict[str, int] = field(default_factory=dict)


@lru_cache(maxsize=1)
def _category_of() -> dict[str, str]:
    catalog = json.loads(data_path("catalog.json").read_text(encoding="utf-8"))
    return {s["code"]: s["category"] for s in catalog["services"]}


def category(service_code: str) -> str:
    """The catalogue category an application is counted under."""
    return _category_of().get(service_code, "other")


def visit_categories(categories: Iterable[str] | None) -> list[str]:
    """The categories a finished home visit counts under: each once, ``none`` when it has none."""
    return sorted({str(c) for c in categories or () if c}) or ["none"]


def citizens(applications: Iterable[Application]) -> int:
    """People among the applications (see the module doc): distinct numbers, plus one per intake without one."""
    numbered: set[str] = set()
    intakes: set[tuple[float, str | None]] = set()
    for a in applications:
        if a.citizen:
            numbered.add(a.citizen)
        else:
            intakes.add((a.created, a.package))
    return len(numbered) + len(intakes)


def admin_rates(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Citizens per administrator per hour: tickets served / hours from their first call to their last finish, day by day.

    Rows: (administrator, day, called_at, finished_at) of served tickets.
    """
    spans: dict[tuple[str, str], list[float]] = {}
    for who, day, called, finished in rows:
        s = spans.setdefault((str(who), str(day)), [float(called), float(finished), 0])
        s[0], s[1], s[2] = min(s[0], float(called)), max(s[1], float(finished)), s[2] + 1
    admins: dict[str, dict[str, Any]] = {}
    for (who, _day), (a, b, n) in spans.items():
        r = admins.setdefault(who, {"served": 0, "hours": 0.0})
        r["served"] += int(n)
        r["hours"] += max(b - a, MIN_SHIFT_S) / 3600
    hours = sum(r["hours"] for r in admins.values())
    for r in admins.values():
        r["per_hour"] = round(r["served"] / r["hours"], 1)
        r["hours"] = round(r["hours"], 2)
    return {"citizens_per_admin_hour": round(sum(r["served"] for r in admins.values()) / hours, 1) if hours else None,
            "per_admin": dict(sorted(admins.items()))}


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).date().isoformat()


def workload(tickets: Iterable[Ticket]) -> dict[str, Any]:
    """Served tickets, their average waiting (issue → call) and service (call → finish) minutes, and the admin rates."""
    served = [t for t in tickets if t.served]
    wait = sum((t.called if t.called is not None else t.issued) - t.issued for t in served)
    service = sum((t.finished if t.finished is not None else t.called or t.issued) - (t.called if t.called is not None else t.issued)
                  for t in served)
    rows = [(t.by, _day(t.called), t.called, t.finished) for t in served if t.by and t.called is not None and t.finished is not None]
    n = len(served)
    return {"served_from_queue": n, "avg_wait_min": round(wait / n / 60, 1) if n else None,
            "avg_service_min": round(service / n / 60, 1) if n else None, **admin_rates(rows)}


def ratings(scores: Iterable[Rating]) -> dict[str, Any]:
    values = [r.score for r in scores]
    return {"count": len(values), "positive_share": round(sum(1 for s in values if s >= POSITIVE) / len(values), 3) if values else None}


def _in(f: Facts, t0: float, t1: float) -> Facts:
    return Facts([t for t in f.trips if t0 <= t.departed < t1], [a for a in f.applications if t0 <= a.created < t1],
                 [t for t in f.tickets if t0 <= t.issued < t1], [r for r in f.ratings if t0 <= r.at < t1],
                 [v for v in f.visits if t0 <= v < t1], dict(f.visit_category_counts))


def _figures(f: Facts, served_people: int) -> dict[str, Any]:
    by_category: dict[str, int] = {}
    for a in f.applications:
        by_category[category(a.service_code)] = by_category.get(category(a.service_code), 0) + 1
    return {
        "trips": len(f.trips),
        "km": round(sum(float(t.km or 0) for t in f.trips), 2),
        "stops": sum(t.stops for t in f.trips),
        "citizens_served": served_people,
        "applications_by_category": dict(sorted(by_category.items())),
        "home_visits_by_category": dict(sorted({"finished": len(f.visits), **f.visit_category_counts}.items())),
        "ratings": ratings(f.ratings),
        "workload": workload(f.tickets),
    }


def department(f: Facts, t0: float, t1: float) -> dict[str, Any]:
    """One van's figures for [t0, t1): the keys of the report (trips … workload)."""
    p = _in(f, t0, t1)
    return _figures(p, max(citizens(p.applications), sum(1 for t in p.tickets if t.served)))


def fleet(per_van: Mapping[str, Facts], t0: float, t1: float) -> dict[str, Any]:
    """The fleet's figures: the vans' facts together, an administrator's name and a person's number qualified by the van."""
    merged = Facts()
    for node, f in per_van.items():
        p = _in(f, t0, t1)
        merged.trips += p.trips
        merged.applications += p.applications
        merged.tickets += [Ticket(t.issued, t.called, t.finished, t.served, f"{node}/{t.by}" if t.by else None) for t in p.tickets]
        merged.ratings += p.ratings
        merged.visits += p.visits
        for k, v in p.visit_category_counts.items():
            merged.visit_category_counts[k] = merged.visit_category_counts.get(k, 0) + v
    return _figures(merged, sum(department(f, t0, t1)["citizens_served"] for f in per_van.values()))


# -- the department's programme indicators (issue 19) ------------------------------
# Counted at HQ, where decisions are made (application status) and ratings' comments arrive sealed.
#
# * **applications**: applications created in the period (by van, by service);
# * **refusals**: those of them HQ has refused (status ``refused``, whenever set); **refusal share** = refusals / applications;
# * **results within / beyond the legal term**: an application's result is the first time it became ``ready``
#   or ``refused``; it is within the term if that came by the end of the day ``term`` working (or calendar, as the
#   catalogue says) days after its creation's day (``due``).
#   A service without a term in the catalogue counts as **term unknown**; an application with no result yet is
#   **pending**, and **overdue** if its term has passed by now (results count whenever they came, so does a delay);
# * **complaints**: negative ratings (1 or 2 of 5) that carry a comment, per 1 000 citizens served;
# * **fees due**: for each service whose catalogue entry has a fee, applications × fee (UAH; a free service 0);
#   services without a fee in the catalogue are listed as unknown, never as 0;
# * **home visits by category**: as in the department report (``department``).
NEGATIVE = 2  # a rating of 1 or 2 of 5 is negative


@dataclass(frozen=True)
class Decision:
    """One application as HQ sees it: service, creation, when its result came (ready or refused) and whether refused."""

    node_id: str
    service_code: str
    created: float
    result_at: float | None
    refused: bool


@dataclass(frozen=True)
class Opinion:
    score: int
    at: float
    commented: bool


def term_days(entry: Mapping[str, Any] | None) -> tuple[int, str] | None:
    """A catalogue entry's legal term: ``term: {"days": n, "days_kind": "working"|"calendar"}`` (working when not said)
    or a plain number of calendar days; None when the catalogue does not give one."""
    term = (entry or {}).get("term")
    if isinstance(term, Mapping):
        days, kind = term.get("days"), str(term.get("days_kind") or "working")
    else:
        days, kind = term, "calendar"
    if isinstance(days, bool) or not isinstance(days, (int, float)) or days < 0:
        return None
    return int(days), kind if kind in ("working", "calendar") else "working"


def due(created: float, term: tuple[int, str]) -> float:
    """The end of the term: the end (UTC) of the day n working (Monday–Friday; public holidays are not known here) or
    calendar days after the creation's day; 0 days is the same day."""
    n, kind = term
    day = datetime.fromtimestamp(created, timezone.utc).date()
    if kind == "calendar":
        day += timedelta(days=n)
    else:
        while n > 0:
            day += timedelta(days=1)
            n -= day.weekday() < 5
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), timezone.utc).timestamp()


def fee(entry: Mapping[str, Any] | None) -> float | None:
    """A catalogue entry's fee in UAH: ``fee: {"amount": "45.40"}``, ``{"free": true}`` (0) or a number; None when not given."""
    value = (entry or {}).get("fee")
    if isinstance(value, Mapping):
        value = 0 if value.get("free") is True else value.get("amount")
    try:
        amount = float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    return amount if amount is not None and amount >= 0 else None


def _term_state(d: Decision, term: tuple[int, str] | None, until: float) -> str:
    if term is None:
        return "term_unknown"
    end = due(d.created, term)
    if d.result_at is None:
        return "overdue" if until > end else "pending"
    return "within_term" if d.result_at <= end else "beyond_term"


def indicators(decisions: Iterable[Decision], opinions: Iterable[Opinion], served: int, visits_by_category: Mapping[str, int],
               catalogue: Mapping[str, Mapping[str, Any]], t0: float, t1: float, now: float) -> dict[str, Any]:
    """The programme indicators for [t0, t1) over the given decisions and ratings (see the definitions above).

    ``served`` is ``citizens_served`` of the same scope (``department`` / ``fleet``); ``catalogue`` maps service codes
    to their catalogue entries (``term``, ``fee``).
    """
    until = now
    per_service: dict[str, dict[str, Any]] = {}
    totals = {"applications": 0, "refusals": 0, "within_term": 0, "beyond_term": 0, "term_unknown": 0, "pending": 0, "overdue": 0}
    for d in decisions:
        if not t0 <= d.created < t1:
            continue
        entry = catalogue.get(d.service_code)
        term = term_days(entry)
        s = per_service.setdefault(d.service_code, {**{k: 0 for k in totals}, "term_days": term[0] if term else None,
                                                    "term_kind": term[1] if term else None, "fee": fee(entry)})
        state = _term_state(d, term, until)
        for bucket in (s, totals):
            bucket["applications"] += 1
            bucket["refusals"] += int(d.refused)
            bucket[state] += 1
    fees: dict[str, float | None] = {}
    for code, s in sorted(per_service.items()):
        s["refusal_share"] = round(s["refusals"] / s["applications"], 3) if s["applications"] else None
        s["fees_due"] = None if s["fee"] is None else round(s["fee"] * s["applications"], 2)
        fees[code] = s["fees_due"]
    complaints = sum(1 for o in opinions if t0 <= o.at < t1 and o.score <= NEGATIVE and o.commented)
    known = [v for v in fees.values() if v is not None]
    return {
        **totals,
        "refusal_share": round(totals["refusals"] / totals["applications"], 3) if totals["applications"] else None,
        "complaints": complaints,
        "citizens_served": served,
        "complaints_per_1000": round(complaints * 1000 / served, 1) if served else None,
        "fees_due_total": round(sum(known), 2) if known else None,
        "fees_unknown_services": sorted(code for code, v in fees.items() if v is None),
        "home_visits_by_category": dict(sorted(visits_by_category.items())),
        "per_service": dict(sorted(per_service.items())),
    }
