"""A trip planned at HQ reaches the van over real Mosquitto; the van runs it and HQ sees the history and the numbers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from provisioning.keys import HQKeys, NodeBundle
from tests.conftest import ADMIN_PASSWORD, REPO, Broker, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.helpers import ApiClient

pytestmark = pytest.mark.functional

HQ_PASSWORD = "Диспетчер-пароль-1"


def post_form(api: ApiClient, path: str, fields: list[tuple[str, str]]) -> int:
    req = urllib.request.Request(api.base + path, data=urllib.parse.urlencode(fields).encode(), method="POST")
    try:
        with api.opener.open(req, timeout=15) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def html(api: ApiClient, path: str) -> str:
    with api.opener.open(api.base + path, timeout=15) as r:
        return str(r.read().decode())


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page[:500]
    return m.group(1)


def start_hq_and_van(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc]) -> tuple[ApiClient, ApiClient]:
    """HQ and the van as processes on the real broker; HQ's user `dispatcher1` (admin role) logged in on the returned client."""
    hq_dir = hq_keys.directory
    r = subprocess.run([sys.executable, "-m", "mobile_office.cli", "hq-user", "dispatcher1", "--role", "admin", "--hq-data-dir", str(hq_dir),
                        "--password", HQ_PASSWORD], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    hq_port, van_port = free_port(), free_port()
    procs.append(spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_dir), "--hq-broker", mosquitto.url, "--hq-host", "127.0.0.1",
                                         "--hq-port", str(hq_port)), tmp_path / "hq.log"))
    procs.append(spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"), "--broker", mosquitto.url,
                                         "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1", "--http-port", str(van_port)),
                       tmp_path / "node.log"))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{hq_port}/healthz") and http_ok(f"http://127.0.0.1:{van_port}/healthz"), 30, what="HQ and van")
    hq = ApiClient(f"http://127.0.0.1:{hq_port}")
    assert hq.form_login("dispatcher1", HQ_PASSWORD) == 200
    wait_until(lambda: any(n["node_id"] == "van-01" for n in hq.get("/api/v1/fleet")), 30, what="the van at HQ")
    return hq, ApiClient(f"http://127.0.0.1:{van_port}")


def test_trip_planned_at_hq_runs_on_the_van(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc]) -> None:
    hq, van = start_hq_and_van(tmp_path, hq_keys, bundle, mosquitto, procs)
    hq_dir = hq_keys.directory

    # The dispatcher plans a trip: a place from the list and one by coordinates, with windows and purposes.
    today = datetime.now(timezone.utc).date().isoformat()
    form = [("csrf", csrf_of(html(hq, "/trips"))), ("node_id", "van-01"), ("title", "Тернівський район"), ("planned_date", today),
            ("kind", "van"), ("assigned_to", "")]
    rows = [("TER-IDP", "", "", "", "09:00", "11:00", "idp"), ("", "Школа № 5", "48.0330", "33.4850", "11:30", "13:00", "remote")]
    for place, name, lat, lon, t_from, t_to, purpose in rows:
        form += [("place", place), ("name", name), ("lat", lat), ("lon", lon), ("from", t_from), ("to", t_to), ("purpose", purpose)]
    assert post_form(hq, "/trips", form) == 200
    listed = hq.get(f"/api/v1/trips?from={today}&to={today}")
    assert listed["trips"] == 0 and [(t["state"], t["title"]) for t in listed["trip_list"]] == [("planned", "Тернівський район")]
    bad = [(k, v if k != "from" else "9 ранку") for k, v in form]
    assert post_form(hq, "/trips", bad) == 422

    van.login("admin", ADMIN_PASSWORD)
    wait_until(lambda: len(van.get(f"/api/v1/trips?date={today}")["trips"]) == 1, 30, what="the plan at the van")
    trip = van.get(f"/api/v1/trips?date={today}")["trips"][0]
    assert trip["state"] == "planned" and trip["title"] == "Тернівський район"
    assert [(s["place"], s["name"], s["from"], s["purpose"]) for s in trip["stops"]] == [
        ("TER-IDP", "Модульне містечко для ВПО, Тернівський район", "09:00", "idp"), (None, "Школа № 5", "11:30", "remote")]

    # The administrator starts and ends it from the trip page (forms with the CSRF token).
    page = html(van, "/trips")
    assert "Тернівський район" in page
    assert post_form(van, "/trips/depart", [("csrf", csrf_of(page)), ("trip", trip["id"])]) == 200
    assert van.get(f"/api/v1/trips?date={today}")["active"] == trip["id"]
    assert post_form(van, "/trips/depart", [("csrf", csrf_of(page))]) == 409  # one trip at a time
    assert post_form(van, "/trips/return", [("csrf", "forged")]) == 403
    assert post_form(van, "/trips/return", [("csrf", csrf_of(page))]) == 200

    # A home visit assigned at HQ with its categories, done at the van: counted by category at HQ and on the van.
    hq_page = html(hq, "/")
    assert post_form(hq, "/visits", [("csrf", csrf_of(hq_page)), ("node_id", "van-01"), ("name", "Гнатюк Ганна"), ("address", "вул. Тестова, 7"),
                                     ("planned_date", today), ("assigned_to", "admin"), ("category", "age80"), ("category", "idp")]) == 200
    wait_until(lambda: "Гнатюк Ганна" in html(van, "/visits"), 30, what="the home visit at the van")
    vid = re.search(r'action="/visits/([0-9a-f]+)/start"', html(van, "/visits")).group(1)  # type: ignore[union-attr]
    for action in ("start", "finish"):
        assert post_form(van, f"/visits/{vid}/{action}", [("csrf", csrf_of(page))]) == 200

    # HQ hears the events and shows the history; the CSV and the report CLI agree.
    wait_until(lambda: [t["state"] for t in hq.get(f"/api/v1/trips?from={today}&to={today}")["trip_list"]] == ["returned"], 30,
               what="the trip's return at HQ")
    rep = hq.get(f"/api/v1/report?from={today}&to={today}")
    assert rep["trips"] == 1 and rep["per_van"]["van-01"]["trips"] == 1 and rep["trip_list"][0]["title"] == "Тернівський район"
    wait_until(lambda: hq.get(f"/api/v1/report?from={today}&to={today}")["home_visits_by_category"] == {"age80": 1, "finished": 1, "idp": 1},
               30, what="the finished home visit at HQ")
    assert "van-01" in html(hq, f"/trips?from={today}&to={today}")
    csv_text = html(hq, f"/trips.csv?from={today}&to={today}")
    assert csv_text.splitlines()[0].startswith("node_id,trip_id") and trip["id"] in csv_text
    out = subprocess.run([sys.executable, "-m", "mobile_office.cli", "report", "--data-dir", str(hq_dir), "--from", today, "--to", today,
                          "--format", "json"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    assert cli["trips"] == 1 and cli["per_van"]["van-01"]["trips"] == 1 and cli["ratings"] == {"count": 0, "positive_share": None}
    assert cli["per_van"]["van-01"]["home_visits_by_category"] == {"age80": 1, "finished": 1, "idp": 1}
    for fmt, expect in (("md", "| van-01 | 1 |"), ("csv", "van-01:trips,1")):
        out = subprocess.run([sys.executable, "-m", "mobile_office.cli", "report", "--data-dir", str(hq_dir), "--from", today, "--to", today,
                              "--format", fmt], cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0 and expect in out.stdout, out.stdout + out.stderr
    # The van's own report has the same breakdown, counted when the visit was finished (no category on any record).
    out = subprocess.run([sys.executable, "-m", "mobile_office.cli", "report", "--data-dir", str(tmp_path / "node"), "--from", today, "--to", today,
                          "--format", "json"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["home_visits_by_category"] == {"age80": 1, "finished": 1, "idp": 1}
