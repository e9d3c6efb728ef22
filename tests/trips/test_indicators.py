"""The department's programme indicators (sync/figures.py ``indicators``) against a known day, and HQ's page, CSV and JSON of them."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from hq import appstatus, catalog_admin, indicators, projections
from hq import trips as hq_trips
from hq.store import HQStore
from sync import catalog_doc, figures
from sync.clock import ManualClock

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=timezone.utc).timestamp()  # the known day: Monday 2 November 2026
DAY = 86400.0
# As the catalogue writes them: a plain number is calendar days; {"days", "days_kind"} working days by default.
CATALOGUE: dict[str, dict[str, Any]] = {"RES-01": {"term": 10, "fee": {"amount": "30.00"}}, "SOC-01": {"term": {"days": 30}},
                                        "PEN-01": {"name": "без строку"}}


def test_definitions_on_a_known_day() -> None:
    d = [figures.Decision("van-01", "RES-01", T0 + 3600, T0 + 5 * DAY, False),  # ready on day 5 of 10: within
         figures.Decision("van-01", "RES-01", T0 + 7200, T0 + 12 * DAY, False),  # ready on day 12: beyond
         figures.Decision("van-01", "RES-01", T0 + 9000, T0 + 2 * DAY, True),  # refused on day 2: a result, within, and a refusal
         figures.Decision("van-01", "SOC-01", T0 + 9000, None, False),  # no result, 30-day term not passed: pending
         figures.Decision("van-02", "RES-01", T0 + 9000, None, False),  # no result, 10-day term passed by "now": overdue
         figures.Decision("van-02", "PEN-01", T0 + 9000, T0 + DAY, True),  # no term in the catalogue
         figures.Decision("van-02", "RES-01", T0 - DAY, T0, False)]  # created the day before: not in the period
    opinions = [figures.Opinion(1, T0 + 100, True), figures.Opinion(2, T0 + 200, True),  # complaints
                figures.Opinion(2, T0 + 300, False),  # negative without a comment: not a complaint
                figures.Opinion(3, T0 + 400, True), figures.Opinion(5, T0 + 500, True),  # comments, not negative
                figures.Opinion(1, T0 + 2 * DAY, True)]  # outside the period
    ind = figures.indicators(d, opinions, 40, {"age80": 2, "finished": 2}, CATALOGUE, T0, T0 + DAY, now=T0 + 20 * DAY)
    assert (ind["applications"], ind["refusals"], ind["refusal_share"]) == (6, 2, 0.333)
    assert (ind["within_term"], ind["beyond_term"], ind["pending"], ind["overdue"], ind["term_unknown"]) == (2, 1, 1, 1, 1)
    assert (ind["complaints"], ind["complaints_per_1000"]) == (2, 50.0)
    assert ind["per_service"]["RES-01"]["fees_due"] == 120.0 and ind["fees_due_total"] == 120.0
    assert ind["fees_unknown_services"] == ["PEN-01", "SOC-01"] and ind["per_service"]["SOC-01"]["term_days"] == 30
    assert ind["per_service"]["SOC-01"]["term_kind"] == "working"
    assert ind["home_visits_by_category"] == {"age80": 2, "finished": 2}
    # Asked on the day itself, the unfinished RES-01 is still within its term.
    early = figures.indicators(d, opinions, 0, {}, CATALOGUE, T0, T0 + DAY, now=T0 + DAY)
    assert (early["pending"], early["overdue"], early["complaints_per_1000"]) == (2, 0, None)


async def test_hq_indicators_from_its_tables(tmp_path: Path) -> None:
    store = await HQStore.open(tmp_path / "hq.db", ManualClock(T0 + 20 * DAY))
    try:
        await hq_trips.create_schema(store.db)
        await appstatus.create_schema(store)
        await catalog_admin.create_schema(store.db)
        await projections.create_schema(store.db)
        rows = [("van-01", 1, "r1", "RES-01", T0 + 3600), ("van-01", 2, "r2", "RES-01", T0 + 7200), ("van-02", 1, "r3", "SOC-01", T0 + 9000),
                ("van-02", 2, "r4", "RES-01", T0 - 40 * DAY)]
        for node, seq, rid, code, created in rows:
            await store.db.execute("INSERT INTO records(node_id, seq, record_id, number, service_code, created, sealed, citizen)"
                                   " VALUES (?, ?, ?, ?, ?, ?, '', ?)", (node, seq, rid, f"N-{rid}", code, created, f"20261102-{seq}"))
        for eid, rid, status, at in [("e1", "r1", "ready", T0 + 3 * DAY), ("e2", "r2", "refused", T0 + DAY), ("e3", "r1", "issued", T0 + 4 * DAY)]:
            await store.db.execute("INSERT INTO status_edits(edit_id, record_id, node_id, old_status, status, hlc, at, username)"
                                   " VALUES (?, ?, 'van-01', 'accepted', ?, 1, ?, 'olena')", (eid, rid, status, at))
        await store.db.execute("INSERT INTO ratings(node_id, seq, application_id, score, at, comment_sealed) VALUES ('van-01', 3, 'r1', 1, ?, 'ab')",
                               (T0 + 5000,))
        # The catalogue HQ publishes carries the legal term and fee (the packaged one may not): RES-01 10 days, 30 UAH.
        doc = catalog_doc.packaged()
        for svc in doc["services"]:
            if svc["code"] == "RES-01":
                svc.update(term={"days": 10, "days_kind": "calendar"}, fee={"amount": "30.00"})
            if svc["code"] == "SOC-01":  # a service the catalogue gives no term and no fee
                svc.pop("term", None)
                svc.pop("fee", None)
        await store.db.execute("INSERT INTO catalog_versions(published_at, published_by, source, services, packages, doc)"
                               " VALUES (?, 'admin', 'test', ?, 0, ?)", (T0, len(doc["services"]), json.dumps(doc, ensure_ascii=False)))
        await store.db.commit()
        d0 = date(2026, 11, 1)
        ind = await indicators.build(store.db, d0, date(2026, 11, 30), T0 - DAY, T0 + 29 * DAY, T0 + 20 * DAY)
        f = ind["fleet"]
        # r1 ready on day 3 and r2 refused on day 1 (within 10 days); SOC-01 has no term here.
        assert (f["applications"], f["refusals"], f["within_term"], f["term_unknown"], f["complaints"]) == (3, 1, 2, 1, 1)
        assert f["per_service"]["RES-01"]["fees_due"] == 60.0 and f["fees_unknown_services"] == ["SOC-01"]
        assert ind["per_van"]["van-01"]["citizens_served"] == 2 and ind["per_van"]["van-01"]["complaints_per_1000"] == 500.0
        assert [m["month"] for m in ind["months"]] == ["2026-11"] and ind["months"][0]["applications"] == 3
        text = indicators.csv_text(ind)
        table = list(csv.DictReader(io.StringIO(text)))
        [fleet] = [r for r in table if r["node_id"] == "all" and r["service_code"] == "all"]
        assert (fleet["applications"], fleet["refusals"], fleet["complaints"]) == ("3", "1", "1")
        assert "<svg" in indicators.charts(ind, {})["months"] and "van-02" in indicators.charts(ind, {})["vans"]
        one = await indicators.build(store.db, d0, date(2026, 11, 30), T0 - DAY, T0 + 29 * DAY, T0 + 20 * DAY, node_id="van-02")
        assert list(one["per_van"]) == ["van-02"] and one["fleet"]["applications"] == 1
    finally:
        await store.close()


def test_terms_and_fees_as_the_catalogue_writes_them() -> None:
    # Monday 2 November 2026: 5 working days end on Monday 9 November, 24:00 UTC; 0 days is the same day.
    assert figures.due(T0 + 3600, (5, "working")) == T0 + 8 * DAY
    assert figures.due(T0 + 3600, (0, "working")) == T0 + DAY
    assert figures.due(T0 + 3600, (5, "calendar")) == T0 + 6 * DAY
    assert figures.term_days({"term": {"days": 1, "days_kind": "working"}}) == (1, "working") and figures.term_days({}) is None
    assert figures.fee({"fee": {"free": True}}) == 0.0 and figures.fee({"fee": {"amount": "302.80", "iban": "UA.."}}) == 302.8
    assert figures.fee({"fee": {"amount": "n/a"}}) is None and figures.fee({}) is None
