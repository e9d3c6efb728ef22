"""HQ's back-office pages in the browser (issue 19): trip planning on a 1280-px screen, the public schedule, indicators, home visits."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from provisioning.keys import NodeBundle
from tests.conftest import Broker, Proc, wait_until
from tests.helpers import ApiClient
from tests.hq.stack import OFFICER_PASSWORD, Stack
from tests.hq.test_hq_browser import PASSWORD, demo  # noqa: F401  (fixture)
from tests.hq.test_status_browser import tiles  # noqa: F401  (fixture)
from tests.ui.conftest import axe_violations, browser, login, screenshot  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.functional]


def test_plan_publish_and_report(browser: Any, demo: tuple[str, str, Path]) -> None:  # noqa: F811
    _van, hq, data = demo
    hq_api = ApiClient(hq, (data / "demo-hq-token.txt").read_text().strip())
    wait_until(lambda: hq_api.get("/api/v1/fleet"), 60, what="the van known at HQ")
    tomorrow = (datetime.now(ZoneInfo("Europe/Kyiv")) + timedelta(days=1)).date().isoformat()
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    login(page, hq, "hq-admin", PASSWORD)

    page.goto(hq + "/trips")
    # The planning form fits the screen: no sideways scrolling at 1280 px.
    wide = page.evaluate("() => [...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > 1280)"
                         ".map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5)")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280, wide
    box = page.locator("#trip-plan").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280
    page.fill("#p-title", "Виїзд для тесту графіка")
    page.fill("#p-date", tomorrow)
    page.select_option("#p-place-1", "TER-IDP")
    page.fill("#p-from-1", "10:00")
    page.fill("#p-to-1", "12:00")
    page.fill("#p-name-2", "Школа №5")
    page.fill("#p-lat-2", "48.03")
    page.fill("#p-lon-2", "33.48")
    page.select_option("#p-purpose-2", "remote")
    page.check("#p-hide-presence")  # this trip opts out of "the van is here now"
    page.click("#send-plan")
    assert "План виїзду надіслано" in page.inner_text("main")
    with sqlite3.connect(data / "hq" / "hq.db") as c:
        assert c.execute("SELECT presence_public FROM trip_plans WHERE title = 'Виїзд для тесту графіка'").fetchall() == [(0,)]
    assert axe_violations(page) == []

    # Anyone, without logging in, sees where the van will stand.
    public = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    public.goto(hq + "/public/schedule")
    assert not public.url.endswith("/login")
    text = public.inner_text("main")
    assert tomorrow in text and "Тернівський район" in text and "Школа №5" in text and "10:00–12:00" in text
    assert public.locator("nav").count() == 0  # nothing of the back office on the public page
    assert "Виїзд для тесту графіка" not in text  # the dispatcher's title is not published
    assert axe_violations(public) == []
    screenshot(public, "hq-public-schedule", docs=True)
    ics = public.request.get(hq + "/public/schedule.ics")
    assert ics.status == 200 and ics.text().count("BEGIN:VEVENT") >= 2 and "LOCATION:Школа №5" in ics.text()

    page.goto(hq + "/indicators")
    assert page.locator("svg.chart").count() == 3 and "Як рахуємо" in page.inner_text("main")
    assert axe_violations(page) == []
    screenshot(page, "hq-indicators", docs=True)

    page.goto(hq + "/")
    page.fill("#v-name", "Гнатюк Ганна Петрівна")
    page.fill("#v-address", "вул. Тестова, 7")
    page.fill("#v-lat", "47.91")
    page.fill("#v-lon", "33.39")
    page.fill("#v-date", tomorrow)
    page.click("#assign-visit")
    assert page.url.split("?")[0].endswith("/visits")
    wait_until(lambda: (page.reload() or True) and "Фургон отримав" in page.inner_text("#visit-list"), 60, what="the van's acknowledgement")
    assert "Гнатюк" not in page.content()  # HQ shows the visit, not the person
    assert axe_violations(page) == []
    screenshot(page, "hq-visits", docs=True)
    ctx.close()


def test_points_picked_on_the_map(browser: Any, tmp_path: Path, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc],  # noqa: F811
                                  tiles: tuple[str, list[str]]) -> None:  # noqa: F811
    """With a tile server, the dispatcher clicks a trip stop or a visit's address instead of typing coordinates."""
    tile_url, _seen = tiles
    st = Stack(tmp_path, mosquitto, bundle, procs)
    st.start_node()
    hq = st.start_hq("--tile-url", tile_url, "--tile-attribution", "тестові тайли")
    st.hq_user("dispatch", "dispatcher")
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    login(page, hq, "dispatch", OFFICER_PASSWORD)

    page.goto(hq + "/trips")
    page.wait_for_selector("#stop-pick-map .leaflet-tile-loaded", timeout=30000)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
    page.click("#stop-pick-map", position={"x": 200, "y": 150})  # no row chosen: the first without coordinates
    lat1, lon1 = float(page.input_value("#p-lat-1")), float(page.input_value("#p-lon-1"))
    assert 47.0 < lat1 < 49.0 and 32.5 < lon1 < 34.5
    page.focus("#p-lat-3")  # the row the dispatcher is on
    page.click("#stop-pick-map", position={"x": 400, "y": 100})
    assert page.input_value("#p-lat-3") and page.input_value("#p-lat-2") == ""
    assert float(page.input_value("#p-lon-3")) > lon1  # further right on the map: further east
    assert axe_violations(page) == []

    wait_until(lambda: page.goto(hq + "/") and page.locator("#pick-map").count() == 1, 60, what="the van on the dashboard")
    page.wait_for_selector("#pick-map .leaflet-tile-loaded", timeout=30000)
    page.click("#pick-map", position={"x": 100, "y": 100})
    assert 47.0 < float(page.input_value("#v-lat")) < 49.0 and page.input_value("#v-lon")
