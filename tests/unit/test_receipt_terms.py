"""Issue 18 item 5: the catalogue's term, fee and legal basis on the receipt; a paid service's NBU payment QR read back."""

from __future__ import annotations

import base64
import copy
import io
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pypdf import PdfReader

from edge.app import create_app
from edge import receipt_pdf
from edge.catalog import Catalog, Fee
from edge.receipt_pdf import BOLD, font_dir
from edge.views import payment_qr_svg
from fpdf import FPDF
from edge import payqr
from edge.service_terms import _uk_days
from provisioning.keys import NodeBundle
from sync import catalog_doc
from tests.unit.test_node_api import login, node_config

needs_zbar = pytest.mark.skipif(shutil.which("zbarimg") is None or shutil.which("pdftoppm") is None,
                                reason="zbar-tools and poppler-utils are needed (bin/setup --test installs them)")


def qr_texts(png: Path) -> list[str]:
    """Every QR code zbarimg finds in the picture, as text."""
    out = subprocess.run(["zbarimg", "--quiet", "--raw", str(png)], capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    # one line per code: the payment code is an ASCII URL (Base64URL inside), so no charset guessing is involved
    return [t for t in out.stdout.decode("utf-8").split("\n") if t]


def nbu_fields(url: str) -> list[str]:
    assert url.startswith("https://bank.gov.ua/qr/"), url
    data = url.removeprefix("https://bank.gov.ua/qr/")
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("utf-8").split("\n")


def check_nbu(fields: list[str], fee: dict[str, str], number: str) -> None:
    """Field by field against format 002 of the NBU rules (docs/api.md, "Payment QR code")."""
    assert len(fields) == 13
    assert fields[0] == "BCD"  # service tag
    assert fields[1] == "002"  # format version
    assert fields[2] == "1"  # encoding: UTF-8
    assert fields[3] == "UCT"  # function: Ukrainian credit transfer
    assert fields[4] == ""  # BIC: reserved
    assert fields[5] == fee["recipient"]
    assert fields[6] == fee["iban"] and catalog_doc.iban_ok(fields[6])
    assert fields[7] == f"UAH{fee['amount']}"
    assert fields[8] == fee["recipient_code"]
    assert fields[9] == "" and fields[10] == ""  # purpose code and reference: reserved
    assert fields[11] == fee["purpose"].replace("{number}", number) and len(fields[11]) <= 140
    assert fields[12] == ""  # display


def test_packaged_catalogue_states_term_fee_basis_and_form_for_every_service() -> None:
    doc = catalog_doc.packaged()
    assert catalog_doc.validate(doc) == []
    for s in doc["services"]:
        assert {"term", "fee", "legal_basis", "form"} <= set(s), s["code"]
    assert any("amount" in s["fee"] for s in doc["services"]) and any(s["fee"].get("free") for s in doc["services"])


@pytest.mark.parametrize("change, where", [
    (lambda s: s["fee"].update(iban="UA218999980000033211000000102"), "fee.iban"),  # one digit off: the mod-97 check fails
    (lambda s: s["fee"].update(amount="-5"), "fee.amount"),
    (lambda s: s["fee"].update(amount="1.005"), "fee.amount"),
    (lambda s: s["fee"].update(recipient_code="1234"), "fee.recipient_code"),
    (lambda s: s["fee"].update(purpose="Збір {rnokpp}"), "fee.purpose"),
    (lambda s: s.update(fee={"free": True, "amount": "1.00"}), "fee"),
    (lambda s: s.update(term={"days": 5, "days_kind": "weekly"}), "term"),
    (lambda s: s.update(term={"days": True, "days_kind": "working"}), "term"),
    (lambda s: s.update(legal_basis=""), "legal_basis"),
    (lambda s: s["form"].update(body="Прошу {number.__class__}"), "form.body"),
    (lambda s: s["form"].update(body="Прошу {surname"), "form.body"),
    (lambda s: s["form"].pop("addressee"), "form"),
])
def test_a_bad_term_fee_or_form_is_refused_with_its_place(change: object, where: str) -> None:
    doc = catalog_doc.packaged()
    paid = next(s for s in doc["services"] if s["code"] == "PRO-01")
    bad = copy.deepcopy(doc)
    change(next(s for s in bad["services"] if s["code"] == "PRO-01"))  # type: ignore[operator]
    errors = catalog_doc.validate(bad)
    idx = doc["services"].index(paid)
    assert any(e.startswith(f"services[{idx}].{where}") for e in errors), errors
    with pytest.raises(ValueError):
        Catalog.from_doc(bad, 2)


def test_ukrainian_day_plurals() -> None:
    assert [_uk_days(n, "working") for n in (1, 3, 5, 11, 21, 24)] == [
        "1 робочий день", "3 робочі дні", "5 робочих днів", "11 робочих днів", "21 робочий день", "24 робочі дні"]
    assert _uk_days(10, "calendar") == "10 календарних днів"


@needs_zbar
def test_payment_qr_decodes_field_by_field(tmp_path: Path) -> None:
    fee_doc = next(s for s in catalog_doc.packaged()["services"] if s["code"] == "PRO-01")["fee"]
    fee = Catalog.load().services["PRO-01"].fee
    assert fee is not None
    png = tmp_path / "pay.png"
    payqr.symbol(payqr.url(fee, "VAN-01-20261130-0007")).save(str(png), scale=6)
    (text,) = qr_texts(png)
    check_nbu(nbu_fields(text), fee_doc, "VAN-01-20261130-0007")


@needs_zbar
@pytest.mark.parametrize("fee, level", [
    (Fee("85.00", "ГУК у Кіровоградській обл.", "UA213223130000026007233566001", "37918230", "Адмінзбір {number}"), "M"),
    # the longest details the catalogue allows: 70-letter recipient, 140-letter purpose (UTF-8: two bytes a letter)
    (Fee("99999.99", "Є" * 70, "UA213223130000026007233566001", "37918230", "Ї" * 140), "L"),
])
def test_the_payment_symbol_keeps_the_nbu_bounds_and_reads_with_its_hryvnia_mark(fee: Fee, level: str, tmp_path: Path) -> None:
    url = payqr.url(fee, "VAN-01-20261130-0007")
    qr = payqr.symbol(url)
    assert payqr.MIN_VERSION <= qr.version <= payqr.MAX_VERSION and qr.error == level  # type: ignore[operator]
    # the PDF's drawing, mark included, read back by a decoder as a phone would read the printed page
    pdf = FPDF(unit="mm", format="A4")
    pdf.add_font("DejaVu", "B", str(font_dir() / BOLD))
    pdf.add_page()
    receipt_pdf._qr(pdf, url, 20, 20, 60, payment=True)
    pdf.output(str(tmp_path / "q.pdf"))
    subprocess.run(["pdftoppm", "-r", "200", "-png", str(tmp_path / "q.pdf"), str(tmp_path / "q")], check=True)
    assert qr_texts(next(tmp_path.glob("q*.png"))) == [url]
    # the page's drawing: the same symbol with the white circle and the sign at its centre
    svg = payment_qr_svg(url, 3)
    side = qr.symbol_size(scale=3)[0]
    assert f'<circle cx="{side / 2:g}" cy="{side / 2:g}" r="{payqr.MARK * qr.symbol_size(scale=3, border=0)[0] / 2:g}"' in svg
    assert "\u20b4</text></svg>" in svg


@pytest.fixture
async def client(bundle: NodeBundle, tmp_path: Path) -> AsyncIterator[TestClient]:
    app = create_app(node_config(bundle, tmp_path / "node"))
    async with TestClient(TestServer(app)) as c:
        yield c


async def _apply(client: TestClient, code: str) -> tuple[str, str]:
    await login(client)
    r = await client.post("/api/v1/applications", json={"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": code})
    assert r.status == 201, await r.text()
    body = await r.json()
    return str(body["id"]), str(body["number"])


async def test_free_service_receipt_says_its_term_and_free_and_no_payment(client: TestClient) -> None:
    app_id, _number = await _apply(client, "SOC-01")
    html = await (await client.get(f"/applications/{app_id}/receipt")).text()
    assert 'id="service-term">до 10 календарних днів; про готовність повідомимо<' in html
    assert 'id="service-fee">безоплатно<' in html
    assert "Постанова Кабінету Міністрів України від 21.10.1995 № 848" in html
    assert 'id="payment"' not in html and "bank.gov.ua" not in html
    assert "до 10 робочих днів" not in html  # the old promise for every service is gone
    # Offline (no broker here): the receipt says the application waits on the van.
    assert 'data-state="created"' in html and "збережено у фургоні, чекає на зв&#39;язок" in html


@needs_zbar
async def test_paid_service_receipt_pdf_carries_term_fee_and_an_nbu_qr(client: TestClient, tmp_path: Path) -> None:
    app_id, number = await _apply(client, "PRO-01")
    fee_doc = next(s for s in catalog_doc.packaged()["services"] if s["code"] == "PRO-01")["fee"]
    html = await (await client.get(f"/applications/{app_id}/receipt")).text()
    assert 'id="service-fee">адміністративний збір 302.80 грн<' in html
    assert f'id="pay-iban">{fee_doc["iban"]}<' in html
    r = await client.get(f"/applications/{app_id}/receipt.pdf")
    assert r.status == 200 and r.content_type == "application/pdf"
    pdf = await r.read()
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    for expected in ("до 5 робочих днів", "адміністративний збір 302.80 грн", fee_doc["iban"], "37988155",
                     "Закон України «Про державну реєстрацію речових прав", "Доставка до ЦНАП"):
        assert expected in text.replace("\n", " "), expected
    # As a phone sees it: the printed page rasterised, every QR code on it read back.
    (tmp_path / "r.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "150", "-png", "-f", "1", "-l", "1", str(tmp_path / "r.pdf"), str(tmp_path / "page")], check=True)
    texts = qr_texts(next(tmp_path.glob("page*.png")))
    assert number in texts  # the application number's code is still there
    (pay,) = [t for t in texts if t.startswith("https://bank.gov.ua/qr/")]
    check_nbu(nbu_fields(pay), fee_doc, number)
