"""HQ's operational pages in English (issue 19 item 7): fleet, trips, home visits, indicators, pre-registration, catalogue and the
public schedule; the words HQ writes are English, the data (stop names, service names) stays as it is; axe on each page."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import wait_until
from tests.helpers import ApiClient
from tests.hq.test_hq_browser import PASSWORD, demo  # noqa: F401  (fixture)
from tests.ui.conftest import axe_violations, browser, login, screenshot  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.functional]

CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# What HQ itself writes on a page (headings, labels, buttons, column heads, explanations, accessible names); data cells are left out.
OWN_WORDS = """() => {
  const main = document.querySelector('main');
  const texts = [...main.querySelectorAll('h1, h2, h3, p, label, legend, button, thead th, figcaption, dt, dd, svg title, #alerts li')]
    .map(e => e.textContent.trim());
  for (const e of main.querySelectorAll('[aria-label], [placeholder]')) texts.push(e.getAttribute('aria-label') || e.getAttribute('placeholder'));
  texts.push(document.title);
  return texts;
}"""


def ukrainian_words(page: Any, data: tuple[str, ...] = ()) -> list[str]:
    """HQ's own words on the page still in Ukrainian (data the page quotes is removed first)."""
    out = []
    for text in page.evaluate(OWN_WORDS):
        for d in data:
            text = text.replace(d, "")
        if CYRILLIC.search(text):
            out.append(text)
    return out


def test_hq_pages_in_english(browser: Any, demo: tuple[str, str, Path]) -> None:  # noqa: F811
    _van, hq, data = demo
    hq_api = ApiClient(hq, (data / "demo-hq-token.txt").read_text().strip())
    wait_until(lambda: hq_api.get("/api/v1/fleet"), 60, what="the van known at HQ")
    tomorrow = (datetime.now(ZoneInfo("Europe/Kyiv")) + timedelta(days=1)).date().isoformat()
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    login(page, hq, "hq-admin", PASSWORD)
    page.click("#lang-switch")
    page.wait_for_load_state()
    assert page.evaluate("document.documentElement.lang") == "en"

    # The fleet.
    page.goto(hq + "/")
    assert page.inner_text("h1") == "Mobile offices: fleet status" and page.inner_text("#fleet-h") == "Vans"
    assert "online" in page.inner_text("#fleet") or "offline" in page.inner_text("#fleet")
    assert ukrainian_words(page) == []
    assert axe_violations(page) == []

    # Trips: plan one in English.
    page.goto(hq + "/trips")
    assert page.inner_text("h1") == "Mobile office trips" and page.inner_text("#hist-h") == "Trip history"
    assert page.inner_text("#p-purpose-1 option[value=idp]") == "IDP settlement"
    assert ukrainian_words(page) == []
    page.fill("#p-title", "English test trip")
    page.fill("#p-date", tomorrow)
    page.select_option("#p-place-1", "TER-IDP")
    page.fill("#p-from-1", "10:00")
    page.fill("#p-to-1", "12:00")
    page.fill("#p-name-2", "School 5")
    page.fill("#p-lat-2", "48.03")
    page.fill("#p-lon-2", "33.48")
    page.select_option("#p-purpose-2", "remote")
    page.click("#send-plan")
    assert "The trip plan was sent to the van" in page.inner_text("main")
    stop_names = ("Модульне містечко для ВПО, Тернівський район",)  # data: stops.json
    assert ukrainian_words(page, stop_names) == []
    assert axe_violations(page) == []

    # A home visit, assigned from the fleet page, followed on the visits page.
    page.goto(hq + "/")
    page.fill("#v-name", "Гнатюк Ганна Петрівна")
    page.fill("#v-address", "вул. Тестова, 7")
    page.fill("#v-lat", "47.91")
    page.fill("#v-lon", "33.39")
    page.fill("#v-date", tomorrow)
    page.click("#assign-visit")
    assert page.inner_text("h1") == "Home visits"
    wait_until(lambda: (page.reload() or True) and "The van received it" in page.inner_text("#visit-list"), 60,
               what="the van's acknowledgement")
    assert "Assigned" in page.inner_text("#visit-list")
    assert ukrainian_words(page) == []
    assert axe_violations(page) == []

    # Indicators: the table, the charts' titles and the definitions.
    page.goto(hq + "/indicators")
    assert page.inner_text("h1") == "Mobile Office programme indicators" and page.inner_text("#def-h") == "How we count"
    assert page.locator("svg.chart").count() == 3
    assert page.locator("svg.chart").first.get_attribute("aria-label") == "Applications, refusals and complaints by month"
    assert "All vans" in page.inner_text("#indicator-table")
    assert ukrainian_words(page) == []
    assert axe_violations(page) == []
    screenshot(page, "hq-indicators-en", docs=True)

    # Pre-registration: the form's errors too.
    page.goto(hq + "/prereg")
    assert page.inner_text("h1") == "Citizens' pre-registration" and page.inner_text("#list-h") == "Bookings from today"
    page.click("#send-prereg")
    errors = page.inner_text("#prereg-errors")
    assert "Enter the surname and given name" in errors and "Choose a service from the catalogue" in errors
    assert ukrainian_words(page) == []
    assert axe_violations(page) == []

    # The catalogue: its services' names are data, the page's words are not.
    page.goto(hq + "/catalog")
    assert page.inner_text("h1") == "Service catalogue" and page.inner_text("#pkg-h") == "Service packages (life situations)"
    assert "Current version" in page.inner_text("#catalog-version")
    assert ukrainian_words(page) == []
    assert axe_violations(page) == []
    ctx.close()

    # The public schedule: a citizen's link in English, no cookie, no login.
    public = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    public.goto(hq + "/public/schedule?lang=en")
    assert public.evaluate("document.documentElement.lang") == "en"
    assert public.inner_text("h1") == "Where the ASC mobile office will be"
    text = public.inner_text("main")
    assert "IDP settlement" in text and "Remote settlement" in text and "School 5" in text and "10:00–12:00" in text
    assert ukrainian_words(public, stop_names) == []
    assert axe_violations(public) == []
    screenshot(public, "hq-public-schedule-en", docs=True)
    public.click("#lang-switch")  # the citizen's own choice wins over the link's language
    public.wait_for_load_state()
    assert public.inner_text("h1") == "Де буде мобільний офіс ЦНАП" and "Поселення ВПО" in public.inner_text("main")
    public.context.clear_cookies()
    public.goto(hq + "/public/schedule")  # no cookie, no link's language: Ukrainian, as before
    assert public.evaluate("document.documentElement.lang") == "uk" and "Поселення ВПО" in public.inner_text("main")
    # The machines' JSON keeps its Ukrainian label whatever the page's language.
    feed = public.request.get(hq + "/public/schedule.json?lang=en").json()
    assert "Поселення ВПО" in str(feed)
