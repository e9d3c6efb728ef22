"""HQ's catalogue and pre-registration pages in Debian's Chromium: errors shown in Ukrainian, accessible (axe), screenshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.hq.test_hq_browser import PASSWORD, demo  # noqa: F401  (fixture)
from tests.ui.conftest import axe_violations, browser, login, screenshot  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.functional]


def test_prereg_and_catalogue_pages(browser: Any, demo: tuple[str, str, Path]) -> None:  # noqa: F811
    _van, hq, _data = demo
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    login(page, hq, "hq-admin", PASSWORD)

    page.click("text=Попередній запис")
    page.fill("#r-name", "Гнатюк Ганна")
    page.fill("#r-phone", "12")
    page.select_option("#r-service_code", "RES-01")
    page.fill("#r-slot", "10:30")
    page.click("#send-prereg")
    assert "Телефон: 10–15 цифр" in page.inner_text("#prereg-errors")
    assert page.input_value("#r-name") == "Гнатюк Ганна"  # what was typed stays
    assert axe_violations(page) == []
    page.fill("#r-phone", "+380671234567")
    page.click("#send-prereg")
    assert page.locator("#prereg-sent").is_visible()

    def delivered() -> bool:
        page.reload()
        return "Доставлено у фургон" in page.inner_text("#preregs")
    wait_until(delivered, 60, interval=1, what="the van's ack on the page")
    assert "Гнатюк" not in page.inner_text("#preregs")  # HQ lists the booking, not the person
    assert axe_violations(page) == []
    screenshot(page, "hq-prereg", docs=True)

    page.click("text=Каталог")
    assert "Поточна версія: 1" in page.inner_text("#catalog-version")
    page.click("#publish-catalog")
    assert "Каталог версії 2 опубліковано" in page.inner_text("#catalog-published")
    assert "Поточна версія: 2" in page.inner_text("#catalog-version")
    assert axe_violations(page) == []
    screenshot(page, "hq-catalog", docs=True)
