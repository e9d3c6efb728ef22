"""Issue 18 items 5, 7, 9 in the browser: a paid service's receipt, the заява signed on the tablet, the delivery list."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.ui.conftest import ARTIFACTS, axe_violations, login, screenshot
from tests.unit.test_receipt_terms import nbu_fields, qr_texts
from tests.ui.test_van_day import PASSWORD, demo  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.functional]


def test_paid_receipt_signed_form_and_delivery(browser: Any, demo: str) -> None:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1024, "height": 768}, locale="uk-UA")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, demo, "admin", PASSWORD)

    page.goto(demo + "/applications/new")
    page.fill("#surname", "Шевченко")
    page.fill("#given_name", "Тарас")
    page.fill("#rnokpp", "1759013776")
    page.select_option("#service_code", "PRO-01")
    # the documents of the chosen service, each with a tick for the inventory
    page.check("input[name=doc_received_0]")
    page.check("input[name=doc_received_2]")
    page.check("#consent")
    page.click("#submit-application")
    page.wait_for_url("**/receipt?saved=1")
    assert page.inner_text("#service-term") == "до 5 робочих днів; про готовність повідомимо"
    assert page.inner_text("#service-fee") == "адміністративний збір 302.80 грн"
    assert page.is_visible("#payment svg")
    if shutil.which("zbarimg"):  # the page's payment QR, hryvnia mark and all, read as a phone reads the screen
        shot = ARTIFACTS / "van-receipt-paid-qr.png"
        page.locator("#payment svg").screenshot(path=str(shot))
        (text,) = qr_texts(shot)
        assert nbu_fields(text)[:4] == ["BCD", "002", "1", "UCT"]
    assert axe_violations(page) == []
    screenshot(page, "van-receipt-paid", docs=True)

    page.click("#application-form")
    page.wait_for_url("**/application")
    assert page.inner_text("#form-heading") == "ЗАЯВА"
    assert page.locator("#form-inventory li").count() == 2
    pad = page.locator("#signature-pad")
    assert pad.is_visible()  # signature.js showed the pad (no inline script: the CSP would refuse it)
    pad.scroll_into_view_if_needed()  # the mouse draws in the viewport
    box = pad.bounding_box()
    page.mouse.move(box["x"] + 30, box["y"] + 100)
    page.mouse.down()
    for i in range(1, 20):
        page.mouse.move(box["x"] + 30 + i * 20, box["y"] + 100 + (30 if i % 2 else -30))
    page.mouse.up()
    dark = page.evaluate("(() => { const c = document.getElementById('signature-pad'); const d = c.getContext('2d')"
                         ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++; return n; })()")
    assert dark > 100, errors  # ink on the pad
    with page.expect_response("**/signature") as posted:
        page.click("#signature-save")
    assert posted.value.status in (200, 303), (posted.value.status, errors)
    page.wait_for_url("**/application?signed=1")
    assert page.is_visible("#form-signed") and page.is_visible("#signature-saved")
    assert axe_violations(page) == []
    screenshot(page, "van-application-form", docs=True)

    def delivered() -> bool:
        page.goto(demo + "/applications")
        return page.locator("tr[data-delivery=acknowledged]").count() >= 1
    wait_until(delivered, 60, what="HQ's ack on the applications page")
    assert axe_violations(page) == []
    screenshot(page, "van-applications", docs=True)
    assert not [e for e in errors if "Content Security Policy" in e], errors
