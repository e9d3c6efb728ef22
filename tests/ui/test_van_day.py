"""A van administrator's day in the browser, against `mobile-office demo`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.ui.conftest import axe_violations, login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.functional]

PASSWORD = "Пароль-для-тесту-1"
PHOTO = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 400  # ~100 kB, JPEG magic: three chunks


@pytest.fixture
def demo(tmp_path: Path, procs: list[Proc]) -> Iterator[str]:
    node_port, hq_port = free_port(), free_port()
    p = spawn(
        mobile_office_cmd("demo", "--data-dir", str(tmp_path / "demo"), "--http-port", str(node_port), "--hq-port", str(hq_port), "--admin-password", PASSWORD),
        tmp_path / "demo.log",
    )
    procs.append(p)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{node_port}/healthz") and http_ok(f"http://127.0.0.1:{hq_port}/healthz"), 60, what="demo")
    yield f"http://127.0.0.1:{node_port}"
    p.terminate()


def test_van_day(browser: Any, demo: str) -> None:
    """Login, queue, a new applicant with one wrong field then corrected, a package, a receipt,
    a rating from a second browser context, logout; with accessibility checks and screenshots."""
    ctx = browser.new_context(viewport={"width": 1024, "height": 768}, locale="uk-UA")
    page = ctx.new_page()
    page.goto(demo + "/")
    assert page.url.endswith("/login")
    assert axe_violations(page) == []

    # Wrong password first: a clear message, and the store stays locked.
    page.fill("#username", "admin")
    page.fill("#password", "не той пароль")
    page.click("#login-submit")
    assert "Неправильне ім'я користувача або пароль" in page.inner_text("#login-error")
    screenshot(page, "van-login", docs=True)

    # Keyboard only: the username keeps its value, type the password, Enter.
    page.focus("#password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(demo + "/")
    assert page.inner_text("h1") == "Черга на сьогодні"

    # The queue: a walk-in, then a pre-registered citizen, who is called first.
    page.click("#issue-ticket")
    assert page.inner_text("#issued-ticket") == "А-001"
    page.click("#issue-prereg")
    assert page.inner_text("#issued-ticket") == "П-002"
    page.click("#call-next")
    assert "викликано" in page.inner_text("#ticket-П-002")
    assert "очікує" in page.inner_text("#ticket-А-001")
    screenshot(page, "van-queue", docs=True)
    assert axe_violations(page) == []

    # One wrong field: the error sits next to it, everything typed is kept.
    page.goto(demo + "/applications/new")
    page.fill("#surname", "Шевченко")
    page.fill("#given_name", "Тарас")
    page.fill("#rnokpp", "1759013775")
    page.fill("#service-search", "RES-01")
    assert page.eval_on_selector("#service_code", "el => el.value") == "RES-01"
    assert "Паспорт громадянина України" in page.inner_text("#documents")
    page.click("#submit-application")
    assert "контрольну цифру" in page.inner_text("#rnokpp-error")
    assert "згоди" in page.inner_text("#consent-error")
    assert page.get_attribute("#rnokpp", "aria-invalid") == "true"
    assert page.input_value("#surname") == "Шевченко"
    assert page.input_value("#given_name") == "Тарас"
    assert page.eval_on_selector("#service_code", "el => el.value") == "RES-01"
    screenshot(page, "van-intake-error", docs=True)
    assert axe_violations(page) == []

    page.fill("#rnokpp", "1759013776")
    page.check("#consent")
    page.click("#submit-application")
    page.wait_for_url(re.compile(r".*/applications/[0-9a-f]{32}/receipt\?saved=1$"))
    number = page.inner_text("#application-number")
    assert re.fullmatch(r"VAN-01-\d{8}-\d{4}", number)
    assert "Шевченко Тарас" in page.inner_text(".receipt")
    assert page.locator(".qr svg").count() == 2  # application number, rating link

    # A photo of the passport from the tablet (here: a file given to the camera input), sealed at once.
    page.set_input_files("#attach-camera", files=[{"name": "passport.jpg", "mimeType": "image/jpeg", "buffer": PHOTO}])
    page.click("#attach-submit")
    # the upload leaves once photos.js has read the photo (edge/static/photos.js): wait for the page it brings
    page.locator("#attachments li").first.wait_for()
    assert page.locator("#attachments li").count() == 1 and "JPEG" in page.inner_text("#attachments")
    # A text file dressed up as a photo is refused in Ukrainian.
    page.set_input_files("#attach-file", files=[{"name": "scan.jpg", "mimeType": "image/jpeg", "buffer": b"not an image"}])
    page.click("#attach-submit")
    page.wait_for_selector("#attach-error:has-text('не є фото')")
    assert "не є фото" in page.inner_text("#attach-error")
    assert page.locator("#attachments li").count() == 1
    photo = page.request.get(demo + str(page.get_attribute("#attachments a", "href")))
    assert photo.ok and photo.body() == PHOTO
    # The receipt as a PDF, made on the node.
    pdf = page.request.get(demo + str(page.get_attribute("#receipt-pdf", "href")))
    assert pdf.ok and pdf.headers["content-type"] == "application/pdf" and pdf.body().startswith(b"%PDF-")
    screenshot(page, "van-receipt", docs=True)
    assert axe_violations(page) == []

    # A reload shows the receipt again and stores nothing twice (post/redirect/get).
    page.reload()
    assert page.inner_text("#application-number") == number
    rate_path = page.get_attribute("#rate-here", "href")

    # The citizen rates on their own phone: a separate browser with no session.
    phone = browser.new_context(viewport={"width": 390, "height": 800}, locale="uk-UA")
    p2 = phone.new_page()
    p2.goto(demo + rate_path)
    assert p2.locator("nav").count() == 0 and p2.locator("#statusbar").count() == 0  # nothing else to reach
    assert axe_violations(p2) == []
    p2.check("#score-5")
    p2.fill("#comment", "Дуже зручно, дякую!")
    p2.click("#rate-submit")
    assert "Дякуємо" in p2.inner_text("#rate-thanks")
    screenshot(p2, "citizen-rating", docs=True)
    p2.goto(demo + rate_path)
    assert p2.locator("#rate-done").count() == 1  # one rating per service event
    p2.goto(demo + "/")
    assert p2.url.endswith("/login")  # a citizen's browser reaches nothing else
    phone.close()

    # A life-situation package: several applications in one go.
    page.goto(demo + "/applications/new")
    page.fill("#surname", "Українка")
    page.fill("#given_name", "Леся")
    page.fill("#rnokpp", "3184710691")
    page.select_option("#package_code", "PKG-BIRTH")
    page.check("#consent")
    page.click("#submit-application")
    page.wait_for_url(re.compile(r".*/receipt\?saved=1$"))
    numbers = page.inner_text("#package-numbers")
    assert numbers.count("VAN-01-") >= 3

    # The status bar is live: everything leaves the outbox once HQ acks it.
    wait_until(lambda: page.inner_text('[data-field="pending"] b').startswith("0"), 90, what="status bar to show the outbox drained")
    # The time source: the demo's GPS agrees with the system clock, so the van's time is confirmed.
    wait_until(lambda: page.inner_text('[data-field="time"] b') == "синхронізовано", 60, what="status bar to show the time source")

    # English is available for every string on the page.
    page.click("text=English")
    assert page.inner_text(".receipt h2") == "Application receipt"
    page.click("text=Українська")

    page.goto(demo + "/")
    page.click("#ticket-П-002 button:has-text('Обслуговано')")
    assert "обслуговано" in page.inner_text("#ticket-П-002")

    page.click("text=Вийти")
    page.wait_for_url(demo + "/login")
    page.goto(demo + "/")
    assert page.url.endswith("/login")
    ctx.close()


def test_returning_citizen_is_found_and_prefilled(browser: Any, demo: str) -> None:
    ctx = browser.new_context(viewport={"width": 1024, "height": 900}, locale="uk-UA")
    page = ctx.new_page()
    login(page, demo, "admin", PASSWORD)

    page.click("text=Заявники")
    page.fill("#q-rnokpp", "1759013776")
    page.click("#find-applicant")
    assert page.locator("#not-found").count() == 1
    assert "1759013776" not in page.url  # searched by POST: never in the URL

    page.click("#new-applicant")
    page.fill("#surname", "Шевченко")
    page.fill("#given_name", "Тарас")
    page.fill("#birth_date", "28.02.1948")
    page.fill("#rnokpp", "1759013776")
    page.fill("#phone", "067 12")  # wrong
    page.click("#save-applicant")
    assert "+380" in page.inner_text("#phone-error")
    assert page.input_value("#birth_date") == "28.02.1948"
    assert axe_violations(page) == []
    page.fill("#phone", "067 123 45 67")
    page.click("#save-applicant")
    page.wait_for_url(re.compile(r".*/applications/new\?applicant=[0-9a-f]{32}$"))
    assert page.input_value("#surname") == "Шевченко" and page.input_value("#rnokpp") == "1759013776"

    # Next visit: found in one lookup by surname and date of birth.
    page.goto(demo + "/applicants")
    page.fill("#q-surname", "шевченко")
    page.fill("#q-birth", "28.02.1948")
    page.click("#find-applicant")
    assert "Шевченко Тарас" in page.inner_text("#found")
    screenshot(page, "van-applicant-found", docs=True)
    page.click("#found a")
    assert page.input_value("#given_name") == "Тарас"
    ctx.close()
