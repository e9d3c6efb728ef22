"""A dispatcher pre-registers a citizen at HQ; sealed to the van, it comes first on the van's queue (real Mosquitto, processes)."""

from __future__ import annotations

import re
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from provisioning.keys import HQKeys, NodeBundle
from tests.conftest import Broker, Proc, wait_until
from tests.helpers import ApiClient
from tests.hq.stack import OFFICER_PASSWORD, HqBrowser, Stack
from tests.hq_downlink.helpers import hq_user, csrf, page, rows

pytestmark = pytest.mark.functional

NAME = "Гнатюк Ганна Петрівна"


def van_post(van: ApiClient, path: str, token: str) -> str:
    """A form post at the van; returns where it redirected to."""
    req = urllib.request.Request(van.base + path, data=urllib.parse.urlencode({"csrf": token}).encode(), method="POST")
    with van.opener.open(req, timeout=15) as r:
        return urllib.parse.unquote(r.url)


def test_preregistration_from_hq_reaches_the_van_queue(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker,
                                                       procs: list[Proc], hq_db: str | None) -> None:
    st = Stack(tmp_path, mosquitto, bundle, procs)
    van = st.start_node()
    # Resent every 3 s until the van acknowledges (default 300 s): a copy lost while the broker restarts is sent again.
    st.start_hq("--status-resend-after", "3", *(["--db", hq_db] if hq_db else []))
    hq_user(st.hq_dir, "dyspetcher", "dispatcher", OFFICER_PASSWORD, hq_db)
    hq_user(st.hq_dir, "petro", "viewer", OFFICER_PASSWORD, hq_db)
    hq = HqBrowser(st.hq_url)
    hq.login("dyspetcher", OFFICER_PASSWORD)
    wait_until(lambda: any(n["node_id"] == "van-01" for n in hq.api.get("/api/v1/fleet")), 60, what="the van in HQ's fleet")
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    form = {"name": NAME, "phone": "067-12", "service_code": "RES-01", "node_id": "van-01", "date": today, "slot": "10:30",
            "stop": "Модульне містечко для ВПО, Тернівський район"}

    viewer = HqBrowser(st.hq_url)
    viewer.login("petro", OFFICER_PASSWORD)
    html = viewer.get("/prereg")
    assert 'id="prereg-form"' not in html
    assert viewer.post("/prereg", {**form, "csrf": csrf(html)})[0] == 403

    # A wrong phone and a past date: the form comes back with both errors and what was typed.
    token = csrf(hq.get("/prereg"))
    status, html = hq.post("/prereg", {**form, "date": "2020-01-01", "csrf": token})
    assert status == 422
    assert "Телефон: 10–15 цифр" in html and "Дата вже минула" in html and f'value="{NAME}"' in html
    assert hq.api.get("/api/v1/prereg")["preregistrations"] == []

    status, html = hq.post("/prereg", {**form, "phone": "+380 67 123 45 67", "csrf": token})
    assert status == 200 and 'id="prereg-sent"' in html
    listed = hq.api.get("/api/v1/prereg")["preregistrations"]
    assert len(listed) == 1 and listed[0]["slot"] == "10:30" and listed[0]["service_code"] == "RES-01"
    pid = listed[0]["id"]
    wait_until(lambda: hq.api.get("/api/v1/prereg")["preregistrations"][0]["state"] == "applied", 60, what="the van's ack at HQ")
    # HQ never keeps the person in the clear: not in its database files (SQLite), not in its API.
    for f in st.hq_dir.glob("hq.db*"):
        data = f.read_bytes()
        assert NAME.encode() not in data and b"380 67 123" not in data
    assert NAME not in str(hq.api.get("/api/v1/prereg"))

    # At the van (logged in): today's pre-registration first, with the name opened from the sealed item.
    # A walk-in came earlier; the pre-registered citizen is still listed first.
    van_post(van, "/queue/issue", csrf(page(van, "/")))
    html = page(van, "/")
    assert 'id="ticket-А-001"' in html and html.index(f'id="prereg-{pid}"') < html.index('id="ticket-А-001"')
    row = re.search(rf'id="prereg-{pid}".*?</tr>', html, re.S)
    assert row is not None and NAME in row.group(0) and "10:30" in row.group(0)
    assert "П-002" in van_post(van, f"/prereg/{pid}/arrived", csrf(html))
    html = page(van, "/")
    row = re.search(rf'id="prereg-{pid}".*?</tr>', html, re.S)
    assert row is not None and "П-002" in row.group(0)
    van_post(van, "/queue/call", csrf(html))  # the pre-registered ticket is called before the walk-in
    row = re.search(r'id="ticket-П-002".*?</tr>', page(van, "/"), re.S)
    assert row is not None and "викликано" in row.group(0)

    # The arrival flows back: HQ shows the citizen came and the ticket, still without the name.
    def arrived() -> dict[str, object] | None:
        r = hq.api.get("/api/v1/prereg")["preregistrations"][0]
        return r if r["state"] == "arrived" else None
    got = wait_until(arrived, 60, what="the arrival at HQ")
    assert got["ticket"] == "П-002"  # type: ignore[index]
    assert "Громадянин прибув, талон П-002" in hq.get("/prereg")
    assert rows(st.node_db, "SELECT kind, result FROM downlink_applied WHERE id = ?", pid) == [("prereg", "applied")]

    # With the broker down the booking is kept sealed and goes out once HQ is connected again (once at the van).
    mosquitto.stop()
    wait_until(lambda: "MQTT link down" in (tmp_path / "hq.log").read_text(encoding="utf-8"), 30, what="HQ noticing the broker is down")
    status, html = hq.post("/prereg", {**form, "phone": "", "name": "Другий Громадянин", "csrf": token})
    assert status == 200 and 'id="prereg-queued"' in html and "Не надіслано" in html
    second = next(r["id"] for r in hq.api.get("/api/v1/prereg")["preregistrations"] if r["id"] != pid)
    mosquitto.start()

    def state_of(prereg_id: str) -> str:
        return str(next(r["state"] for r in hq.api.get("/api/v1/prereg")["preregistrations"] if r["id"] == prereg_id))
    wait_until(lambda: state_of(second) == "applied", 90, interval=0.5, what="the queued booking delivered after the broker came back")
    assert rows(st.node_db, "SELECT COUNT(*) FROM preregistrations") == [(2,)]
