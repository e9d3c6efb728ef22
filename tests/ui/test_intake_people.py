"""Issue 18 in the browser: a person without РНОКПП with a guardian, the English page's errors, a form that
survives a lost Wi-Fi, and photos made smaller on the tablet (against `mobile-office demo`)."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.ui.conftest import axe_violations, login, screenshot
from tests.ui.test_van_day import PASSWORD, demo  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.functional]


def fill_person(page: Any) -> None:
    page.fill("#surname", "Гнатюк")
    page.fill("#given_name", "Ганна")
    page.select_option("#service_code", "SOC-01")


def test_guardian_files_for_a_person_without_rnokpp(browser: Any, demo: str) -> None:  # noqa: F811
    """A home visit: the guardian of a bedridden woman who refused a РНОКПП; her passport has the mark."""
    ctx = browser.new_context(viewport={"width": 1024, "height": 900}, locale="uk-UA")
    page = ctx.new_page()
    login(page, demo, "admin", PASSWORD)
    page.goto(demo + "/applications/new")
    fill_person(page)
    page.select_option("#rnokpp_absent_reason", "religious")
    page.select_option("#document_type", "passport_book")
    page.fill("#document_number", "кв 123456")
    page.click("#representative summary")
    page.select_option("#representative_kind", "guardian")
    page.fill("#representative_surname", "Гнатюк")
    page.fill("#representative_given_name", "Петро")
    page.select_option("#representative_document_type", "id_card")
    page.fill("#representative_document_number", "000123456")
    page.fill("#representative_basis_number", "17/2024")
    page.fill("#representative_basis_date", "05.02.2024")  # wrong on purpose below: no consent yet
    page.click("#submit-application")
    assert "згоди" in page.inner_text("#consent-error")
    assert page.input_value("#representative_basis_number") == "17/2024"  # kept, with the section open
    assert axe_violations(page) == []
    screenshot(page, "van-intake-representative", docs=True)
    page.check("#consent")
    page.click("#submit-application")
    page.wait_for_url(re.compile(r".*/applications/[0-9a-f]{32}/receipt\?saved=1$"))
    parties = page.inner_text("main")
    assert "Гнатюк Петро" in parties and "рішення про опіку № 17/2024 від 05.02.2024" in parties
    screenshot(page, "van-receipt-representative", docs=True)
    ctx.close()


def test_english_page_shows_english_errors(browser: Any, demo: str) -> None:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1024, "height": 900}, locale="en-GB")
    page = ctx.new_page()
    login(page, demo, "admin", PASSWORD)
    page.goto(demo + "/lang/en?next=/applications/new")
    page.fill("#surname", "Коваль")
    page.fill("#given_name", "Марія")
    page.fill("#rnokpp", "1759013776")
    page.select_option("#service_code", "BUS-02")
    page.click("#business summary")
    page.select_option("#business_kind", "legal_entity")
    page.fill("#business_edrpou", "14360571")
    page.fill("#business_name", "ТОВ «Світанок»")
    page.click("#submit-application")
    assert "The EDRPOU code's check digit is wrong" in page.inner_text("#business_edrpou-error")
    assert "Enter the signatory's position" in page.inner_text("#business_signatory_position-error")
    assert "without the applicant's consent" in page.inner_text("#consent-error")
    assert page.inner_text("p.error[role=alert]").startswith("Please check the fields marked in red")
    assert axe_violations(page) == []
    screenshot(page, "van-intake-english-errors", docs=True)
    page.goto(demo + "/applications/" + "0" * 32 + "/receipt")
    assert page.inner_text("h1") == "Application not found"
    ctx.close()


def test_form_survives_lost_wifi(browser: Any, demo: str) -> None:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1024, "height": 900}, locale="uk-UA")
    page = ctx.new_page()
    login(page, demo, "admin", PASSWORD)
    page.goto(demo + "/applications/new")
    fill_person(page)
    # the Wi-Fi dropping and coming back while the form is being typed sends nothing by itself
    ctx.set_offline(True)
    ctx.set_offline(False)
    page.wait_for_function("() => navigator.onLine")
    page.fill("#rnokpp", "1759013776")
    page.fill("#notes", "лежача, другий поверх")
    assert page.url.endswith("/applications/new")
    page.check("#consent")
    ctx.set_offline(True)
    page.click("#submit-application")
    page.wait_for_selector("#offline-notice:not([hidden])")
    assert "Немає зв'язку" in page.inner_text("#offline-notice")
    assert page.url.endswith("/applications/new")  # still the form, with everything typed
    assert page.input_value("#surname") == "Гнатюк" and page.input_value("#notes") == "лежача, другий поверх"
    # nothing of it was written to the tablet's storage
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
    ctx.set_offline(False)
    page.wait_for_url(re.compile(r".*/applications/[0-9a-f]{32}/receipt\?saved=1$"), timeout=30_000)
    assert "Гнатюк Ганна" in page.inner_text("main")
    ctx.close()


def big_photo(path: Path) -> int:
    """A 3200x2400 camera-like JPEG (noise over a gradient, so it does not compress away)."""
    rnd = random.Random(5)
    small = Image.new("RGB", (400, 300))
    small.putdata([(x % 256, y % 256, rnd.randrange(256)) for y in range(300) for x in range(400)])
    img = small.resize((3200, 2400), Image.Resampling.NEAREST)
    noise = Image.effect_noise((3200, 2400), 40).convert("RGB")
    Image.blend(img, noise, 0.3).save(path, "JPEG", quality=95)
    return path.stat().st_size


def uploaded(page: Any, base: str) -> bytes:
    href = page.get_attribute("#attachments a", "href")
    assert href
    r = page.request.get(base + href)
    assert r.ok
    return bytes(r.body())


def test_photo_is_made_smaller_unless_the_original_is_kept(browser: Any, demo: str, tmp_path: Path) -> None:  # noqa: F811
    photo = tmp_path / "passport.jpg"
    original = big_photo(photo)
    ctx = browser.new_context(viewport={"width": 1024, "height": 900}, locale="uk-UA")
    page = ctx.new_page()
    login(page, demo, "admin", PASSWORD)
    sizes = []
    for keep in (False, True):
        page.goto(demo + "/applications/new")
        fill_person(page)
        page.fill("#rnokpp", "1759013776")
        page.check("#consent")
        page.set_input_files("#attach-file", str(photo))
        if keep:
            page.check("input[name=attach_original]")
        page.click("#submit-application")
        page.wait_for_url(re.compile(r".*/receipt\?saved=1$"))
        data = uploaded(page, demo)
        sizes.append(len(data))
        with Image.open(io.BytesIO(data)) as got:
            assert max(got.size) == (3200 if keep else 1600) and got.format == "JPEG"
    small, kept = sizes
    assert kept == original
    print(f"photo 3200x2400: {original} bytes; scaled on the tablet: {small} bytes ({small / original:.0%})")
    assert small * 3 < original, (small, original)  # a fraction of the bytes over the metered link
    ctx.close()
