"""The trips pages in Debian's Chromium: a dispatcher plans a trip at HQ, the van's administrator starts and ends it."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from provisioning.keys import HQKeys, NodeBundle
from tests.conftest import ADMIN_PASSWORD, Broker, Proc, wait_until
from tests.functional.test_trip_planning import HQ_PASSWORD, start_hq_and_van
from tests.ui.conftest import axe_violations, browser, screenshot  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.functional]


def test_plan_at_hq_and_run_on_the_van(browser: Any, tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle,  # noqa: F811
                                       mosquitto: Broker, procs: list[Proc]) -> None:
    hq_api, van_api = start_hq_and_van(tmp_path, hq_keys, bundle, mosquitto, procs)
    today = datetime.now(timezone.utc).date().isoformat()
    hq = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    hq.goto(hq_api.base + "/login")
    hq.fill("#username", "dispatcher1")
    hq.fill("#password", HQ_PASSWORD)
    hq.click("#login-submit")
    hq.goto(hq_api.base + "/trips")
    hq.fill("#p-title", "Виїзд після обстрілу")
    hq.fill("#p-date", today)
    hq.select_option("#p-place-1", "MET-STR")
    hq.fill("#p-from-1", "10:00")
    hq.fill("#p-to-1", "13:00")
    hq.select_option("#p-purpose-1", "attack")
    hq.click("#send-plan")
    assert "План виїзду надіслано" in hq.inner_text("main")
    history = hq.inner_text("#trip-history")
    assert "Виїзд після обстрілу" in history and "(10:00–13:00)" in history  # planned, listed before it runs
    assert axe_violations(hq) == []
    screenshot(hq, "hq-trips", docs=True)

    van = browser.new_context(viewport={"width": 1024, "height": 900}).new_page()
    van.goto(van_api.base + "/login")
    van.fill("#username", "admin")
    van.fill("#password", ADMIN_PASSWORD)
    van.click("#login-submit")
    wait_until(lambda: van.goto(van_api.base + "/trips") and "Виїзд після обстрілу" in van.inner_text("#trip-list"), 30,
               what="the plan on the van's trip page")
    listed = van.inner_text("#trip-list")
    assert "10:00–13:00" in listed and "заплановано" in listed and "після обстрілу" in listed
    van.click("#trip-list button")
    assert "у дорозі" in van.inner_text("#trip-list")
    assert axe_violations(van) == []
    screenshot(van, "van-trip", docs=True)
    van.click("#trip-return")
    assert "повернувся" in van.inner_text("#trip-list")
    wait_until(lambda: hq.goto(hq_api.base + f"/trips?from={today}&to={today}") and "returned" in hq.inner_text("#trip-history"), 30,
               what="the return at HQ")
