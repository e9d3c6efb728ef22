"""The public schedule: the iCalendar feed read back by a real iCalendar library, the JSON, no login, no home visits."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import icalendar
import pytest
from aiohttp.test_utils import TestClient, TestServer

from hq.app import HQConfig, create_app
from hq.appkeys import STORE
from hq.schedule import fold_line, ical_escape
from provisioning.keys import HQKeys
from sync.clock import ManualClock
from sync.envelope import Envelope
from tests.conftest import Broker

# 2026-11-18 08:00 UTC = 10:00 in Kyiv
T0 = datetime(2026, 11, 18, 8, 0, tzinfo=timezone.utc).timestamp()
DAY = "2026-11-18"

VAN_STOPS: list[dict[str, Any]] = [{"place": "TER-IDP", "name": "Модульне містечко для ВПО, Тернівський район", "lat": 48.014, "lon": 33.465,
              "from": "10:00", "to": "12:30", "purpose": "idp"},
             {"place": None, "name": "Школа №5; вхід з двору, біля «Сільпо»", "lat": 48.03, "lon": 33.48, "from": None, "to": None,
              "purpose": "remote"},
             {"place": None, "name": "вул. Приватна, 7, кв. 3", "lat": 48.05, "lon": 33.5, "from": "15:00", "to": "16:00", "purpose": "home"}]
HOME_STOPS: list[dict[str, Any]] = [{"place": None, "name": "вул. Садова, 1, кв. 12", "lat": 47.9, "lon": 33.4, "from": "09:00", "to": "10:00", "purpose": "home"}]


async def _plan(db: Any, trip_id: str, node: str, kind: str, day: str, stops: list[dict[str, Any]], presence: int = 1) -> None:
    await db.execute(
        "INSERT INTO trip_plans(trip_id, node_id, kind, title, planned_date, assigned_to, stops, created, created_by, presence_public)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (trip_id, node, kind, "Гнатюк Ганна: приватна назва виїзду", day, None, json.dumps(stops, ensure_ascii=False), T0, "disp", presence))
    await db.commit()


def ev(**doc: object) -> bytes:
    return json.dumps(doc).encode()


@pytest.fixture
async def hq(hq_keys: HQKeys, mosquitto: Broker, tmp_path: Path) -> Any:
    cfg = HQConfig(data_dir=tmp_path / "hqdata", keys=hq_keys, broker=mosquitto.url, host="127.0.0.1", clock=ManualClock(T0))
    cfg.data_dir.mkdir()
    async with TestClient(TestServer(create_app(cfg))) as client:
        db = client.app[STORE].db
        await _plan(db, "t1", "van-01", "van", DAY, VAN_STOPS)
        await _plan(db, "t2", "van-02", "van", DAY, VAN_STOPS[:1], presence=0)  # opted out of "here now"
        await _plan(db, "h1", "van-01", "home_round", DAY, HOME_STOPS)
        await _plan(db, "old", "van-01", "van", "2026-11-01", VAN_STOPS[:1])  # past: not published
        yield client


async def test_ics_feed_parses_with_every_planned_stop_and_no_home_visit(hq: TestClient[Any, Any]) -> None:
    resp = await hq.get("/public/schedule.ics")  # no session cookie: public
    assert resp.status == 200 and resp.content_type == "text/calendar"
    raw = await resp.read()
    assert b"\r\n" in raw and all(len(line) <= 75 for line in raw.split(b"\r\n"))
    cal = icalendar.Calendar.from_ical(raw)
    events = [c for c in cal.walk("VEVENT")]
    assert sorted(str(e["UID"]) for e in events) == ["t1-1@mobile-office", "t1-2@mobile-office", "t2-1@mobile-office"]
    by_uid = {str(e["UID"]): e for e in events}
    first = by_uid["t1-1@mobile-office"]
    assert str(first["LOCATION"]) == VAN_STOPS[0]["name"]
    geo: Any = first["GEO"]
    assert (geo.latitude, geo.longitude) == (48.014, 33.465)
    assert first.decoded("DTSTART") == datetime(2026, 11, 18, 8, 0, tzinfo=timezone.utc)  # 10:00 Kyiv
    assert first.decoded("DTEND") == datetime(2026, 11, 18, 10, 30, tzinfo=timezone.utc)
    assert first.get("DTSTAMP") is not None and "ВПО" in str(first["SUMMARY"])
    second = by_uid["t1-2@mobile-office"]
    assert str(second["LOCATION"]) == VAN_STOPS[1]["name"]  # ; , survive escaping
    assert second.decoded("DTSTART") == date(2026, 11, 18)  # no window: the whole day
    for e in events:
        assert e.get("LOCATION") and e.get("GEO") is not None
    text = raw.decode()
    assert "Приватна" not in text and "Садова" not in text and "Гнатюк" not in text


async def test_json_schedule_and_here_now_from_the_vans_arrival(hq: TestClient[Any, Any]) -> None:
    store = hq.app[STORE]
    doc = await (await hq.get("/public/schedule.json")).json()
    assert doc["version"] == 1 and [s["uid"] for s in doc["stops"]] == ["t1-2@mobile-office", "t1-1@mobile-office", "t2-1@mobile-office"]  # the whole-day stop first
    assert not any(s["here_now"] for s in doc["stops"])
    assert "Гнатюк" not in json.dumps(doc, ensure_ascii=False) and all(s["purpose"] != "home" for s in doc["stops"])
    # Both vans arrive at their first stop; van-02's trip opted out of the mark.
    at = {"id": "t1-1", "place": "TER-IDP", "name": "x", "lat": 48.0141, "lon": 33.4652}
    await store.store_envelope(Envelope("van-01", "evt", 1, (ev(type="trip", id="t1", event="departed", at=T0),
                                                               ev(type="trip", id="t1", event="at_stop", at=T0 + 600, stop=at)), 1), "mqtt")
    await store.store_envelope(Envelope("van-02", "evt", 1, (ev(type="trip", id="t2", event="departed", at=T0),
                                                               ev(type="trip", id="t2", event="at_stop", at=T0 + 600, stop={**at, "id": "t2-1"})), 1), "mqtt")
    doc = await (await hq.get("/public/schedule.json")).json()
    here = {s["uid"]: s["here_now"] for s in doc["stops"]}
    assert here == {"t1-1@mobile-office": True, "t2-1@mobile-office": False, "t1-2@mobile-office": False}
    assert all("48.0141" not in json.dumps(s) for s in doc["stops"])  # coarse: never the van's own position
    page = await (await hq.get("/public/schedule")).text()
    assert "Фургон тут зараз" in page and "Тернівський" in page and "Приватна" not in page
    # The van leaves: the mark goes with it.
    await store.store_envelope(Envelope("van-01", "evt", 3, (ev(type="trip", id="t1", event="left_stop", at=T0 + 7200, stop={"id": "t1-1"}),), 1), "mqtt")
    doc = await (await hq.get("/public/schedule.json")).json()
    assert not any(s["here_now"] for s in doc["stops"])


def test_ical_text_escaping_and_folding() -> None:
    assert ical_escape("a,b;c\\d\ne") == "a\\,b\\;c\\\\d\\ne"
    line = "LOCATION:" + "Ї" * 80
    folded = fold_line(line)
    parts = folded.split("\r\n")
    assert all(len(p.encode()) <= 75 for p in parts) and all(p.startswith(" ") for p in parts[1:])
    assert "".join(p[1:] if i else p for i, p in enumerate(parts)) == line
